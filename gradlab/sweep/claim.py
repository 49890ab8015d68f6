"""Who runs a sweep point right now: the liveness rule shared by shards, hosts and resubmissions.

A worker holds an exclusive POSIX lock (``fcntl.lockf``) on ``<root>/.claims/<point>.lock``
for as long as it runs the point. The kernel releases the lock when the process ends, however
it ends (SIGKILL, ``scancel``, a node's time limit); on a shared filesystem the filesystem's
lock manager does the same for every host (NFS: lockd, or the NFSv4 lease). So:

- a point whose claim is held is running in a live process, on this host or another: it is
  left alone (*running elsewhere*), even by a second submission of the same array;
- a point whose ``meta.json`` says ``running`` but whose claim is free was killed: it re-runs.

Where the filesystem has no POSIX locks (``lockf`` fails with ENOLCK or the like), the rule
falls back to the process ``meta.json`` records: ``host`` and ``pid``. On the same host a live
pid means running; a run recorded on another host cannot be checked from here and re-runs, as
it did before claims existed. Lock files are never removed (removing one races with a shard
taking it); they are empty and live in a hidden folder of the sweep.
"""

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path

from gradlab.liveness import recorded_process_alive

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks, the fallback rule applies
    fcntl = None

CLAIMS_FOLDER = ".claims"
_BUSY = (errno.EACCES, errno.EAGAIN)  # lockf's answer when another process holds the lock
WAIT_S = 1.0  # how long a worker retries a busy claim: a status probe holds it for microseconds


def claim_path(run_path: Path) -> Path:
    """The lock file of the point whose run directory is ``run_path``."""
    run_path = Path(run_path)
    return run_path.parent / CLAIMS_FOLDER / f"{run_path.name}.lock"


@contextlib.contextmanager
def hold(run_path: Path, wait_s: float = WAIT_S) -> Iterator[bool | None]:
    """Within the block this process holds the point's claim (True), or another live process
    does (False), or the filesystem has no locks (None). Closing the file releases it."""
    path = claim_path(run_path)
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            held = _try_lock(fd)
            if held is not False or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        yield held
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool | None:
    if fcntl is None:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        return False if error.errno in _BUSY else None
    return True


def is_claimed(run_path: Path) -> bool | None:
    """True if a live process holds the point's claim, False if none does, None when the
    claim cannot tell (no lock file: the run was not started by a sweep; no locks)."""
    try:
        fd = os.open(claim_path(run_path), os.O_RDWR)
    except OSError:
        return None
    try:
        held = _try_lock(fd)  # released at once by the close below
    finally:
        os.close(fd)
    return None if held is None else not held


def is_running(run_path: Path, meta: dict) -> bool:
    """The liveness rule: is the run of a point whose meta.json says running still going?
    The claim when it can tell, else the recorded process on this host; else no."""
    claimed = is_claimed(run_path)
    if claimed is not None:
        return claimed
    return bool(recorded_process_alive(meta))
