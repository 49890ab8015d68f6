"""Sweeps: one spec file expands into many runs, run in parallel, resumable, shardable.

```yaml
name: phase-diagram
base: ../configs/demo.yaml               # relative to this file; or an inline `config:` mapping
set:                                     # optional: the same overrides for every point
  train.steps: 100
grid:                                    # full cross product, first key slowest
  model.init.weight_scale: [1, 2, 4, 8]
  model.depth: {range: [10, 60, 10]}     # start, stop (exclusive), step; floats allowed
zip:                                     # optional: lists varied together, same length
  train.lr: [0.1, 0.05]
  train.batch_size: [32, 64]
seeds: [0, 1, 2]                         # innermost axis
```

Points are numbered in that order (grid, then zip, then seeds). Each point is named from the
values it varies, labels sorted, seed last: ``depth=20,weight_scale=4,seed=0``; the name
depends on the point's values only, so adding a value to an axis renames nothing. A point runs
in ``<root>/<name>/`` (root: ``results/<sweep name>/`` or ``--out``); ``<root>/sweep.json``
holds the spec and every point's overrides.

``--set`` overrides from the command line apply to every point after ``set:``; one naming a
key the sweep varies is an error. Every point's config is checked before anything is
written. Re-running a sweep skips points whose run says ``completed`` or ``diverged`` with the
same config, re-runs ``running`` (killed) and ``interrupted`` ones (resuming them from their
checkpoint.npz when they have one: ``train.checkpoint_every``), and ``failed`` ones only
with ``retry_failed``; a directory holding a different config is an error. ``--shard K/N``
(K 0-based, like ``$SLURM_ARRAY_TASK_ID``) keeps the points with ``index % N == K``.

Each point runs in its own Python process (BLAS limited to one thread), so a crash or a kill
of one point never takes the others down. The package uses no numpy itself.

A point is run by one process at a time: its worker holds the point's claim, and a shard
leaves alone a point whose claim a live process holds, however many shards or resubmissions
overlap; a point whose process is gone (killed) re-runs. See ``claim`` for the rule.

The code, by concern: ``expand`` (the spec into checked points), ``plan`` (shards, what
each folder holds, the dry-run listing), ``claim`` (the liveness rule), ``execute`` (worker
processes, the report), ``status`` (``gradlab sweep --status``).
"""

from gradlab.results import DONE_STATUSES

# _worker is what each worker process runs (``from gradlab.sweep import _worker``: a test
# replaces it here); _WorkerPool is re-exported for the tests of signal forwarding.
from gradlab.sweep.execute import (
    BLAS_THREAD_VARIABLES,
    Outcome,
    SweepReport,
    _worker,
    _WorkerPool,
    default_jobs,
    format_report,
    read_sweep_record,
    run_sweep,
    worker_environment,
)
from gradlab.sweep.expand import (
    DEFAULT_RESULTS_ROOT,
    MAX_AXIS_LENGTH,
    SPEC_KEYS,
    Point,
    Sweep,
    expand_sweep,
    format_name_value,
    load_sweep,
    point_name_for,
)
from gradlab.sweep.plan import (
    Plan,
    PlannedPoint,
    format_plan,
    parse_shard,
    plan_sweep,
    select_shard,
)
from gradlab.sweep.status import STATUS_ORDER, PointStatus, all_done, format_status, point_statuses

__all__ = [
    "BLAS_THREAD_VARIABLES",
    "DEFAULT_RESULTS_ROOT",
    "DONE_STATUSES",
    "MAX_AXIS_LENGTH",
    "SPEC_KEYS",
    "STATUS_ORDER",
    "Outcome",
    "Plan",
    "PlannedPoint",
    "Point",
    "PointStatus",
    "Sweep",
    "SweepReport",
    "_WorkerPool",
    "_worker",
    "all_done",
    "default_jobs",
    "expand_sweep",
    "format_name_value",
    "format_plan",
    "format_report",
    "format_status",
    "load_sweep",
    "parse_shard",
    "plan_sweep",
    "point_name_for",
    "point_statuses",
    "read_sweep_record",
    "run_sweep",
    "select_shard",
    "worker_environment",
]
