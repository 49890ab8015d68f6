"""Import hygiene, checked in a fresh interpreter: the engine is numpy only, and the CLI
does not pay for matplotlib until a command needs it."""

import json
import subprocess
import sys

import pytest

HEAVY = ("click", "yaml", "matplotlib", "jinja2")


def _modules_after(statement, with_stdout=False):
    """Top-level names in sys.modules of a fresh interpreter after ``statement`` (and its
    stdout with ``with_stdout``)."""
    code = (
        "import json, sys\n"
        f"{statement}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    modules = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    return (modules, completed.stdout) if with_stdout else modules


def test_fresh_interpreter_is_clean():
    """The baseline: none of the heavy modules is loaded by the interpreter itself."""
    assert not _modules_after("pass") & {*HEAVY, "numpy", "gradlab"}


def test_engine_imports_numpy_only():
    modules = _modules_after("import gradlab.engine")
    assert {"numpy", "gradlab"} <= modules  # the import really happened
    for name in HEAVY:
        assert name not in modules, f"import gradlab.engine loads {name}"


@pytest.mark.parametrize("statement", ["import gradlab.cli", "import gradlab.cli as c; c.main"])
def test_cli_import_does_not_load_matplotlib(statement):
    modules = _modules_after(statement)
    assert "click" in modules  # the CLI really was imported
    assert "matplotlib" not in modules


def test_help_does_not_load_matplotlib():
    """``gradlab --help`` (the CLI entry point, run in-process) never imports matplotlib, nor
    Jinja2 (``gradlab report`` imports both when it runs)."""
    statement = (
        "from gradlab.cli import main\n"
        "sys.argv = ['gradlab', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code"
    )
    modules, stdout = _modules_after(statement, with_stdout=True)
    assert "Usage: gradlab" in stdout  # the help really was printed
    assert "report" in stdout
    assert not modules & {"matplotlib", "jinja2"}


def test_names_and_config_checking_do_not_load_numpy():
    """The vocabulary is names only: config checking and the CLI's choices stay numpy-free."""
    modules = _modules_after("import gradlab.vocabulary, gradlab.config, gradlab.cli")
    assert {"gradlab", "yaml", "click"} <= modules
    assert "numpy" not in modules
