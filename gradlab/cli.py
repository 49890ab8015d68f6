"""The ``gradlab`` command: thin commands that parse, call the library and report.

Library errors (GradlabError, ConfigError) become one line on stderr and exit code 2.
Heavy modules are imported inside the commands, so ``gradlab --help`` stays fast and never
imports matplotlib.
"""

import math
import sys

import click

from gradlab import __version__
from gradlab.errors import GradlabError

EXIT_INTERRUPTED = 130


class UserError(click.ClickException):
    """A one-line error (no usage text) with exit code 2."""

    exit_code = 2


def _fail(error: GradlabError):
    raise UserError(str(error)) from None


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value (YAML scalar), e.g. --set train.lr=0.05. Repeatable.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradlab")
def cli():
    """gradlab: see vanishing and exploding gradients in deep networks, and what clipping
    and normalization do about them."""


@cli.command("run")
@click.argument("config_path", metavar="CONFIG")
@set_option
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory (default results/<name>)."
)
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run_command(config_path, overrides, out, seed, force, quiet):
    """Train the experiment described in CONFIG (YAML) and write its run directory.

    Prints a per-layer gradient-norm table, the measured factor M with the theory's
    prediction and a verdict. Exit 0 when completed or diverged, 130 when interrupted.
    """
    from gradlab.config import load_config
    from gradlab.runner import run_config

    try:
        config = load_config(config_path, overrides, seed=seed)
        progress = not quiet and sys.stderr.isatty()
        result = run_config(config, out=out, force=force, progress=progress)
    except GradlabError as error:
        _fail(error)
    click.echo(format_run_report(result))
    if result.status == "interrupted":
        click.echo(f"interrupted at step {result.meta.get('step_reached')}", err=True)
        sys.exit(EXIT_INTERRUPTED)


@cli.command("config")
@click.argument("config_path", metavar="CONFIG")
@set_option
def config_command(config_path, overrides):
    """Validate CONFIG and print it fully resolved (every default filled in)."""
    from gradlab.config import dump_config_yaml, load_config

    try:
        config = load_config(config_path, overrides)
    except GradlabError as error:
        _fail(error)
    click.echo(dump_config_yaml(config), nl=False)


def _number(value, spec=".3g"):
    return "nan" if value is None or not math.isfinite(value) else format(value, spec)


def format_run_report(run, max_rows: int = 24) -> str:
    """The end-of-run stdout: per-layer gradient norms (init, end), a sentence, a key=value line."""
    summary = run.summary or {}
    layers = summary.get("layers", {})
    init = layers.get("init", {}).get("weight_grad_norm", [])
    final = layers.get("final", {}).get("weight_grad_norm", [])
    depth = len(init)
    shown = list(range(depth))
    lines = []
    if depth > max_rows:
        stride = math.ceil(depth / (max_rows - 1))
        shown = sorted(set(range(0, depth, stride)) | {depth - 1})
        lines.append(f"(every {stride}th layer; all layers in {run.path / 'layers.csv'})")
    final_step = layers.get("final", {}).get("step")
    lines.append(f"{'layer':>5}  {'|dL/dW| init':>12}  {'|dL/dW| step ' + str(final_step):>16}")
    for i in shown:
        end = final[i] if i < len(final) else None
        lines.append(f"{i + 1:>5}  {_number(init[i], '.3e'):>12}  {_number(end, '.3e'):>16}")
    factors = summary.get("gradient_factor", {})
    theory = summary.get("theory") or {}
    m_init = factors.get("init", {}).get("delta")
    m_final = factors.get("final", {}).get("delta")
    predicted = theory.get("factor") if theory.get("applicable") else None
    last = factors.get("final") or factors.get("init") or {}
    if last.get("sentence"):
        lines.append(last["sentence"])
    if predicted is not None:
        lines.append(
            f"measured M at init {_number(m_init, '.4g')}, mean-field theory "
            f"{_number(predicted, '.4g')} ({theory.get('regime')})"
        )
    if summary.get("divergence"):
        d = summary["divergence"]
        lines.append(
            f"diverged at step {d['step']}: non-finite {d.get('quantity', 'value')} in the "
            f"{d['pass']} pass, layer {d['layer']}"
        )
    verdict = last.get("regime", "unknown")
    lines.append(
        f"status={run.status} M_init={_number(m_init, '.4g')} M_final={_number(m_final, '.4g')} "
        f"theory={_number(predicted, '.4g')} verdict={verdict} path={run.path}"
    )
    return "\n".join(lines)


@cli.command("sweep")
@click.argument("spec_path", metavar="SWEEP")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Parallel runs (default: cores).")
@click.option("--shard", metavar="K/N", help="Only points with index % N == K (K 0-based).")
@click.option("--dry-run", is_flag=True, help="List the points and what would run; run nothing.")
@click.option("--retry-failed", is_flag=True, help="Also re-run points that failed before.")
@click.option("--out", type=click.Path(file_okay=False), help="Sweep folder (results/<name>).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def sweep_command(spec_path, jobs, shard, dry_run, retry_failed, out, quiet):
    """Run every point of the sweep spec SWEEP (YAML: base, grid, zip, seeds); resumable.

    Points already completed or diverged are skipped; killed or interrupted ones re-run.
    On SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1).
    Exit 0 when every point is done, 1 when any failed, 2 on a bad spec, 130 interrupted.
    """
    from gradlab import sweep

    try:
        plan = sweep.plan_sweep(
            sweep.load_sweep(spec_path, out=out),
            sweep.parse_shard(shard) if shard is not None else None,
            retry_failed,
        )
        if dry_run:
            click.echo(sweep.format_plan(plan))
            return
        report = sweep.run_sweep(plan, jobs, progress=not quiet and sys.stderr.isatty())
    except GradlabError as error:
        _fail(error)
    click.echo(sweep.format_report(report))
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if report.failures:
        sys.exit(1)


def main():
    cli(prog_name="gradlab")
