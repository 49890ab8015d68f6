"""The ``gradlab`` command: thin commands that parse, call the library and report.

Library errors (GradlabError, ConfigError) become one line on stderr and exit code 2.
Heavy modules are imported inside the commands, so ``gradlab --help`` stays fast and never
imports matplotlib.
"""

import math
import sys

import click

from gradlab import __version__, vocabulary
from gradlab.errors import GradlabError
from gradlab.formatting import number_text

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
    from gradlab.runner import memory_warning, prepare_data, run_config

    try:
        config, table = prepare_data(load_config(config_path, overrides, seed, origin="--set"))
        if warning := memory_warning(config):
            click.echo(warning, err=True)
        progress = not quiet and sys.stderr.isatty()
        result = run_config(config, out=out, force=force, progress=progress, table=table)
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
        config = load_config(config_path, overrides, origin="--set")
    except GradlabError as error:
        _fail(error)
    click.echo(dump_config_yaml(config), nl=False)


@cli.command("theory")
@click.option(
    "--activation",
    type=click.Choice(vocabulary.ACTIVATIONS),
    default="sigmoid",
    show_default=True,
)
@click.option("--weight-scale", type=float, help="sigma_w: W ~ N(0, sigma_w^2/n) (required).")
@click.option("--bias-scale", type=float, default=0.0, show_default=True, help="sigma_b.")
@click.option("--norm", type=click.Choice(vocabulary.NORMS), default="none", show_default=True)
@click.option(
    "--leaky-slope",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.01,
    show_default=True,
    help="leaky_relu's slope below 0.",
)
@click.option("--batch-size", type=click.IntRange(min=1), help="For --norm batch.")
@click.option("--q0", type=float, default=1.0, show_default=True, help="Mean squared input.")
@click.option("--tol", type=float, default=0.05, show_default=True, help="Verdict tolerance.")
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Probability of dropping a unit of each hidden layer's output.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--critical-line",
    is_flag=True,
    help="Print the critical sigma_w for each of --bias-scales instead (no --weight-scale).",
)
@click.option(
    "--bias-scales",
    metavar="B1,B2,...",
    help="sigma_b values for --critical-line, e.g. 0,0.05,0.3 (default: --bias-scale).",
)
def theory_command(
    activation,
    weight_scale,
    bias_scale,
    norm,
    leaky_slope,
    batch_size,
    q0,
    tol,
    dropout,
    fmt,
    critical_line,
    bias_scales,
):
    """Mean-field prediction at initialization: q*, chi_1, the factor M, regime, critical
    weight scale and the depth scales xi_grad, xi_q, c*, xi_c (Schoenholz et al. 2017); with
    --critical-line, the critical weight scale for several bias scales."""
    from gradlab import theory, theory_report

    scales = _bias_scales(bias_scales, bias_scale) if critical_line else [bias_scale]
    if not critical_line and weight_scale is None:
        raise UserError("--weight-scale is required (unless --critical-line)")
    checked = [] if critical_line else [("--weight-scale", weight_scale, False)]
    checked += [("--bias-scale", value, False) for value in scales]
    checked += [("--q0", q0, False), ("--tol", tol, True)]
    for option, value, strict in checked:
        if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
            rule = "> 0" if strict else ">= 0"
            raise UserError(f"{option} must be {rule} (a finite number), got {value:g}")
    try:
        if critical_line:
            rows = theory_report.critical_line(activation, scales, norm, q0, dropout, leaky_slope)
            header = {"activation": activation, "norm": norm, "q0": q0, "dropout": dropout}
            click.echo(theory_report.format_critical_line(rows, header, fmt))
            return
        prediction = theory.predict(
            activation,
            weight_scale,
            bias_scale,
            norm=norm,
            q0=q0,
            batch_size=batch_size,
            tol=tol,
            leaky_slope=leaky_slope,
            dropout=dropout,
        )
    except OverflowError:  # e.g. --weight-scale 1e200: its square is beyond the float range
        raise UserError(
            "--weight-scale, --bias-scale or --q0 is too large for the mean-field computation "
            "(its square overflows)"
        ) from None
    click.echo(theory_report.format_prediction(prediction, fmt, batch_size, leaky_slope))


def _bias_scales(text: str | None, default: float) -> list[float]:
    """--bias-scales as numbers (a comma-separated list), or [--bias-scale]."""
    if text is None:
        return [default]
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise UserError(
                f"--bias-scales: {item.strip()!r} is not a number; give a comma-separated "
                "list such as 0,0.05,0.3"
            ) from None
    return values


@cli.command("summary")
@click.argument("paths", nargs=-1, required=True, type=click.Path(), metavar="PATH...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--group-by-seed",
    is_flag=True,
    help="One row per point (runs equal but for the seed): mean, std and count over seeds.",
)
def summary_command(paths, fmt, group_by_seed):
    """One row per run under PATH...: status, the config keys that differ, M at init and final,
    theory, verdict, final losses. Config values as given, results to 4 significant digits
    (csv and json: full precision). The csv loads with pandas.read_csv and with
    numpy.genfromtxt(path, names=True, delimiter=",", dtype=None, encoding=None).

    A run without summary.json (killed: status running/incomplete) still shows M at init
    and the theory, computed from its files."""
    from gradlab.report import summarize

    try:
        click.echo(summarize(paths, fmt, group_by_seed), nl=False)
    except GradlabError as error:
        _fail(error)


def _number(value, spec=".3g"):
    """A number in the run report and the theory output; nan when missing, so each
    key=value of the last line stays one token."""
    return number_text(value, spec, missing="nan")


def format_run_report(run, max_rows: int = 24) -> str:
    """The end-of-run stdout: per-layer gradient norms (init, end), the verdict sentences, M
    against theory, and a key=value line. ``verdict`` is the regime at initialization (what
    theory predicts); ``verdict_final`` the regime of the trained network."""
    from gradlab import analysis

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
        lines.append(f"(one layer in {stride}; all layers in {run.path / 'layers.csv'})")
    final_step = layers.get("final", {}).get("step")
    widths = analysis.varying_widths((run.config.get("model") or {}).get("width"))
    width_head = "" if widths is None else f"  {'width':>5}"
    lines.append(
        f"{'layer':>5}{width_head}  {'|dL/dW| init':>12}  {'|dL/dW| step ' + str(final_step):>16}"
    )
    for i in shown:
        end = final[i] if i < len(final) else None
        width = "" if widths is None else f"  {widths[i] if i < len(widths) else '':>5}"
        lines.append(f"{i + 1:>5}{width}  {_number(init[i], '.3e'):>12}  {_number(end, '.3e'):>16}")
    factors = summary.get("gradient_factor", {})
    at_init, at_end = factors.get("init") or {}, factors.get("final") or {}
    m_init, m_final = at_init.get("delta"), at_end.get("delta")
    theory = summary.get("theory") or {}
    predicted = theory.get("factor") if theory.get("applicable") else None
    if at_init.get("sentence"):
        lines.append(f"at init: {at_init['sentence']}")
    if at_end.get("sentence") and at_end.get("step") != at_init.get("step"):
        lines.append(f"at step {at_end['step']}: {at_end['sentence']}")
    if predicted is not None:
        lines.append(
            f"measured M at init {_number(m_init, '.4g')}, mean-field theory "
            f"{_number(predicted, '.4g')} ({theory.get('regime')})"
        )
    if at_init.get("width_steps"):
        lines.extend(analysis.describe_width_steps(at_init["width_steps"]))
    if summary.get("divergence"):
        d = summary["divergence"]
        lines.append(
            f"diverged at step {d['step']}: non-finite {d.get('quantity', 'value')} in the "
            f"{d['pass']} pass, layer {d['layer']}"
        )
    lines.append(
        f"status={run.status} M_init={_number(m_init, '.4g')} M_final={_number(m_final, '.4g')} "
        f"theory={_number(predicted, '.4g')} verdict={at_init.get('regime', 'unknown')} "
        f"verdict_final={at_end.get('regime', 'unknown')} path={run.path}"
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
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a config value for every point, e.g. --set train.steps=50 (not a key the "
    "sweep varies). Repeatable.",
)
def sweep_command(spec_path, jobs, shard, dry_run, retry_failed, out, quiet, overrides):
    """Run all points of a sweep spec; resumable.

    SWEEP is a YAML file: name, base (or config), grid, zip, seeds; see docs/sweeps.md.

    Points already completed or diverged are skipped; killed or interrupted ones re-run.
    On SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1).
    Exit 0 when every point is done, 1 when any failed, 2 on a bad spec, 130 interrupted.
    """
    from gradlab import sweep

    try:
        plan = sweep.plan_sweep(
            sweep.load_sweep(spec_path, out=out, overrides=overrides),
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


@cli.command("plot")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Folder for the figures (default <run>/plots)."
)
@click.option(
    "--dpi",
    type=click.IntRange(min=20, max=1200),
    default=150,
    show_default=True,
    help="Resolution of PNG figures (dots per inch).",
)
def plot_command(paths, fmt, out, dpi):
    """Draw the figures of each run at or below PATH (a run or a folder of runs).

    Per run: gradient norm by layer with the fitted and theoretical M, a layer x step
    heatmap, loss, clipping and saturation. For several runs also comparisons and, when
    exactly two numeric config keys vary, a phase diagram; when those are the weight scale
    and the depth of runs on real classification data, the trainability figure (training
    accuracy with k xi_c; the best-separating k is printed and kept in trainability.json).
    Prints each file written; exit 2 when a figure cannot be written. SVG keeps its text as
    text (editable).
    """
    from gradlab.plots import plot_paths  # matplotlib only for this command

    try:
        plotted = plot_paths(paths, fmt=fmt, out=out, dpi=dpi)
    except GradlabError as error:
        _fail(error)
    for message in plotted.warnings:
        click.echo(f"warning: {message}", err=True)
    for path in plotted.written:
        click.echo(str(path))
    for line in plotted.notes:
        click.echo(line)


def main():
    cli(prog_name="gradlab")
