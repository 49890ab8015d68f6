"""Write what the tutorial's runs were computed with into docs/tutorial.md.

Usage: python docs/record_environment.py TUTORIAL.md RUNS_FOLDER   (docs/make_figures.sh)

Reads the versions and the BLAS runtime every run recorded in its meta.json and replaces the
lines between the two markers below in TUTORIAL.md; the rest of the file is kept byte for byte.
"""

import json
import platform
import sys
from collections import Counter
from pathlib import Path

BEGIN = "<!-- make_figures: environment -->"
END = "<!-- /make_figures: environment -->"


def describe_run(meta: dict) -> str:
    """One run's versions and BLAS as one phrase."""
    blas = meta.get("blas") or {}
    threads = blas.get("threads")
    thread_text = "? threads" if threads is None else f"{threads} thread{'s' * (threads != 1)}"
    forced = blas.get("coretype_env")
    forced_text = f", OPENBLAS_CORETYPE={forced}" if forced else ", OPENBLAS_CORETYPE unset"
    return (
        f"gradlab {meta.get('gradlab')}, numpy {meta.get('numpy')}, Python {meta.get('python')}; "
        f"OpenBLAS {blas.get('version')}, kernel {blas.get('kernel')}, {thread_text}"
        f"{forced_text}"
    )


def environment_block(runs_folder: Path) -> str:
    """The lines between the markers: one per distinct environment, with its run count."""
    metas = sorted(runs_folder.rglob("meta.json"))
    if not metas:
        raise SystemExit(f"record_environment: no meta.json under {runs_folder}")
    counts = Counter(describe_run(json.loads(path.read_text(encoding="utf-8"))) for path in metas)
    machine = f"{platform.system()} {platform.machine()}"
    lines = [f"Computed on {machine} with:"]
    lines += [f"- {text} ({count} runs)" for text, count in sorted(counts.items())]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with the lines between BEGIN and END replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"record_environment: expected one {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    tutorial, runs_folder = Path(argv[0]), Path(argv[1])
    text = tutorial.read_text(encoding="utf-8")
    updated = replace_block(text, environment_block(runs_folder))
    if updated != text:
        tutorial.write_text(updated, encoding="utf-8")
    print(f"{tutorial}: environment recorded")


if __name__ == "__main__":
    main(sys.argv[1:])
