"""Is the process that meta.json records for a running run still going?

meta.json records the process writing a run (``host``, ``pid``) and when its session began
(``started_at``, or the last of ``resumes``). On its own host that process can be probed;
on Linux a pid the system has since given to a newer process is told apart by the process's
start time. Sweeps ask this where their claims (POSIX locks) cannot tell; ``gradlab run
--force`` and ``--resume`` ask it before they replace or go on with a run, so that two
processes never write one run folder.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

from gradlab.errors import GradlabError

SLACK_S = 2.0  # a process may start this long after the session it records (clock rounding)


def this_host() -> str:
    """The name meta.json records as ``host``: a pid means something on its own host only."""
    return socket.gethostname()


def recorded_process_alive(meta: dict) -> bool | None:
    """Whether the process meta.json records (host, pid) is alive: known on its own host
    only; None for another host or a run without the record (older gradlab)."""
    pid, host = meta.get("pid"), meta.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or host != this_host():
        return None
    if os.name == "nt":  # os.kill would end the process there, not probe it
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    started = _process_start(pid)
    session = _session_start(meta)
    if started is not None and session is not None and started > session + SLACK_S:
        return False  # the pid was given to a process that began after the run: not the run's
    return True


def refuse_live_run(path: Path, meta: dict) -> None:
    """A GradlabError when ``meta`` (the meta.json of the run in ``path``) says running and
    the process it records is alive on this host (and is not this one): replacing or
    resuming the run would mix two processes' rows in one folder."""
    if meta.get("status") != "running":
        return
    if meta.get("pid") == os.getpid() or not recorded_process_alive(meta):
        return
    raise GradlabError(
        f"{path} is still being run by process {meta['pid']} on this host; stop that process "
        "first (a killed run can then be resumed) or choose another --out"
    )


def _session_start(meta: dict) -> float | None:
    """When the recorded process's session began (epoch seconds): its last resumption, else
    the run's start; None if meta.json does not say."""
    resumes = meta.get("resumes")
    last = resumes[-1].get("at") if isinstance(resumes, list) and resumes else None
    when = last if isinstance(last, str) else meta.get("started_at")
    try:
        return datetime.fromisoformat(when).timestamp()
    except (TypeError, ValueError):
        return None


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds) from Linux's /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        ticks = float(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: starttime
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
