"""Numbers as text: the one formatter behind run CSV cells, summary tables and CSVs, the CLI's
reports and figure labels. Standard library only, so every layer may import it.

Two ways to write a number, chosen by the reader:

- exact (no ``spec``), for files a program reads back: the shortest text that reads back as
  the same float (``repr``: 0.1, 1e-05, 0.30000000000000004), deterministic across
  platforms; integers as written;
- rounded (a format ``spec`` such as ".4g" or ".3e"), for people: tables, reports, labels.

Non-finite floats are written nan, inf and -inf in both, as Python and numpy write and read
them. ``missing`` is the text for None (a value the run never recorded), which each reader
spells its own way: an empty CSV cell, "nan" in the CLI's key=value lines, "n/a" in a label.

Config values have their own rule (``config_text``): they are shown as the user wrote them.
"""

import numbers


def number_text(value, spec: str | None = None, missing: str = "") -> str:
    """``value`` as text: exact without ``spec``, else ``format(value, spec)``; ``missing``
    for None and for anything that is not a number (a bool counts as one: 1 or 0)."""
    if type(value) is float:  # first: CSV rows are written every logged step
        return repr(value) if spec is None else format(value, spec)
    if value is None or not isinstance(value, numbers.Real):
        return missing
    if isinstance(value, numbers.Integral):
        return str(int(value)) if spec is None else format(int(value), spec)
    # numpy floats: np.float64's repr names its type in numpy 2, float32 widens exactly
    return number_text(float(value), spec, missing)


def config_text(value) -> str:
    """A config value as given: the exact number, but 4 for 4.0 (YAML reads both alike);
    true/false for booleans; the text of a string; '' for None; a list (model.width) as
    [256,64,256], one token."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return f"[{','.join(config_text(item) for item in value)}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = number_text(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)
