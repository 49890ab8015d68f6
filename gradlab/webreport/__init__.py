"""``gradlab report``: one self-contained HTML page for a results folder or a single run.

The page works offline, opened straight from disk with nothing beside it: the figures are
inline SVG (a quarter smaller than base64 data URIs), the stylesheet and the script are
inline, and nothing refers to another file or host. It is rendered from a Jinja2 template
(``templates/``, package data) with autoescaping on, so every text that comes from a config,
a file or a folder name is escaped; the figures' SVG is the one markup passed through as it
is, since matplotlib escapes every text and attribute in it (``page.inline``). The script
reads the page's own table and needs no data of its own.

What the page shows is what the other commands show, by the same code: the table of
``gradlab summary`` (``report.summary_rows``, ``report.table_columns``), the figures of
``gradlab plot`` (``plots.run_figures``, ``plots.group_figures``), and each run's verdict
sentences, theory and divergence record from summary.json (computed from its files, as
everywhere else, for a run without one). A run whose files are missing or corrupt is listed
with its problems on the page; the others are shown in full.

Imported only by ``gradlab report`` (matplotlib and Jinja2 are slow to import).
"""

from gradlab.webreport.page import DEFAULT_NAME, Report, build_report, write_report

__all__ = ["DEFAULT_NAME", "Report", "build_report", "write_report"]
