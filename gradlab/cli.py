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
@click.argument("config_path", metavar="[CONFIG]", required=False)
@set_option
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory (default results/<name>)."
)
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option("--force", is_flag=True, help="Overwrite an existing run directory.")
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    metavar="RUN_DIR",
    help="Go on with an interrupted or killed run from its checkpoint (train.checkpoint_every).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def run_command(config_path, overrides, out, seed, force, resume_dir, quiet):
    """Train the experiment described in CONFIG (YAML) and write its run directory.

    Prints a per-layer gradient-norm table, the measured factor M with the theory's
    prediction and a verdict. Exit 0 when completed or diverged, 130 when interrupted.

    With --resume RUN_DIR, CONFIG may be left out (the run's own config.yaml is used); if
    given, with its --set and --seed, it must be the run's config.
    """
    from gradlab.config import load_config
    from gradlab.memory import memory_warning
    from gradlab.resume import resume_run
    from gradlab.run_report import format_run_report
    from gradlab.runner import prepare_data, run_config

    if resume_dir is None and config_path is None:
        raise UserError("missing CONFIG: gradlab run CONFIG, or gradlab run --resume RUN_DIR")
    if resume_dir is not None and (out is not None or force):
        raise UserError("--resume RUN_DIR continues that run in place: leave out --out and --force")
    try:
        config, table = None, None
        if config_path is not None:
            loaded = load_config(config_path, overrides, seed, origin="--set")
            config, table = prepare_data(loaded)
        elif overrides or seed is not None:
            raise UserError("--set and --seed need CONFIG (a resumed run keeps its config)")
        if config is not None and (warning := memory_warning(config)):
            click.echo(warning, err=True)
        progress = not quiet and sys.stderr.isatty()
        if resume_dir is not None:
            result = resume_run(resume_dir, config, progress=progress)
        else:
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
    "--residual",
    type=click.Choice(vocabulary.RESIDUAL_BRANCHES),
    help="A residual network with this branch: the predicted gradient profile (needs --depth).",
)
@click.option(
    "--branch-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="sigma_v of --residual full: V ~ N(0, sigma_v^2/n).",
)
@click.option("--depth", type=click.IntRange(min=1), help="Residual blocks (with --residual).")
@click.option(
    "--norm-position",
    type=click.Choice(vocabulary.NORM_POSITIONS),
    default="pre",
    show_default=True,
    help="Where --norm goes in a residual block.",
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
    residual,
    branch_scale,
    depth,
    norm_position,
    fmt,
    critical_line,
    bias_scales,
):
    """Mean-field prediction at initialization: q*, chi_1, the factor M, regime, critical
    weight scale and the depth scales xi_grad, xi_q, c*, xi_c (Schoenholz et al. 2017); with
    --critical-line, the critical weight scale for several bias scales; with --residual, the
    gradient's predicted ratio across --depth residual blocks and the per-block factors at
    the first and the last block."""
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
    if residual is not None:
        if critical_line or dropout > 0:
            raise UserError("--residual goes with neither --critical-line nor --dropout")
        try:
            text = theory_report.format_residual(
                activation, weight_scale, bias_scale, norm, leaky_slope, q0, residual,
                branch_scale, depth, norm_position, fmt,
            )  # fmt: skip
        except GradlabError as error:
            _fail(error)
        click.echo(text)
        return
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


@cli.command("sweep")
@click.argument("spec_path", metavar="SWEEP")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Parallel runs (default: cores).")
@click.option("--shard", metavar="K/N", help="Only points with index % N == K (K 0-based).")
@click.option("--dry-run", is_flag=True, help="List the points and what would run; run nothing.")
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Count the points completed, diverged, running (since when), interrupted, failed and "
    "not started, and list the unfinished ones; run nothing. Safe while shards run. "
    "Exit 0 when every point is completed or diverged, 1 otherwise.",
)
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
def sweep_command(
    spec_path, jobs, shard, dry_run, show_status, retry_failed, out, quiet, overrides
):
    """Run all points of a sweep spec; resumable.

    SWEEP is a YAML file: name, base (or config), grid, zip, seeds; see docs/sweeps.md.

    Points already completed or diverged are skipped; killed or interrupted ones re-run.
    On SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1).
    Exit 0 when every point is done, 1 when any failed, 2 on a bad spec, 130 interrupted.
    """
    from gradlab import sweep

    if dry_run and show_status:
        raise UserError("--dry-run and --status: give one of them")
    try:
        plan = sweep.plan_sweep(
            sweep.load_sweep(spec_path, out=out, overrides=overrides),
            sweep.parse_shard(shard) if shard is not None else None,
            retry_failed,
        )
        if dry_run:
            click.echo(sweep.format_plan(plan))
            return
        if show_status:
            statuses = sweep.point_statuses(plan)
            click.echo(sweep.format_status(plan, statuses))
            sys.exit(0 if sweep.all_done(statuses) else 1)
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


@cli.command("report")
@click.argument("path", type=click.Path(), metavar="PATH")
@click.option("--out", type=click.Path(), help="The HTML file (default PATH/report.html).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser.")
@click.option(
    "--jobs", "-j", type=click.IntRange(min=1), help="Processes drawing figures (default: cores)."
)
@click.option(
    "--figures",
    metavar="NAMES",
    help="These figures per run, comma-separated, named as gradlab plot names their files, "
    "or all. Default: at most 150 figures of runs, so every figure of up to 30 runs, and "
    "for more runs the first of gradient_by_layer, loss, spectrum, gradient_heatmap, "
    "saturation, clipping that fit. Drawing them is most of a report's time.",
)
def report_command(path, out, open_page, jobs, figures):
    """One self-contained web page for the runs at or below PATH (a sweep, a folder of runs,
    or one run): the summary table (sortable, filterable), the comparison figures and phase
    diagram, and per run its figures, verdict sentences, resolved config and divergence record.

    Works offline, opened from disk: figures and script are inside the file. Prints the file
    written; problems with a run's files are listed on the page and on stderr. Exit 2 when
    PATH holds no runs or the file cannot be written."""
    from gradlab.plots import figure_names
    from gradlab.webreport import write_report  # matplotlib and Jinja2 only for this command

    try:
        names = None if figures is None else figure_names(figures)
        written, warnings = write_report(path, out, jobs, names)
    except GradlabError as error:
        _fail(error)
    for message in warnings:
        click.echo(f"warning: {message}", err=True)
    click.echo(str(written))
    if open_page:
        click.launch(str(written))


def main():
    cli(prog_name="gradlab")
