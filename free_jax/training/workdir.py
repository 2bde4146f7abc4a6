"""Guards of a run's --workdir: one process at a time, and named kill points for fault tests.

The lock is ``fcntl.flock`` on ``<workdir>/.lock``: the kernel releases it when the holding
process exits or dies (even by SIGKILL), so a crashed run never leaves a stale lock behind.

Kill points: with ``FREE_JAX_KILL_AT=<point>:<iteration>`` in the environment, the training
loop SIGKILLs its own process when it reaches ``<point>`` at that iteration (``kill_point``).
The fault tests use it to crash a real run between two saves; it does nothing when unset.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from pathlib import Path

KILL_AT_ENV = "FREE_JAX_KILL_AT"
LOCK_NAME = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir's lock."""


@contextlib.contextmanager
def workdir_lock(workdir: str | Path):
    """Holds ``<workdir>/.lock`` for the duration; raises WorkdirBusyError if another process does."""
    path = Path(workdir) / LOCK_NAME
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise WorkdirBusyError(
            f"{Path(workdir)} is in use by another run (process {holder} holds {path}). Two runs on one "
            "workdir would overwrite each other's checkpoints and results: wait for it to finish, stop it, or "
            "pass another --workdir. (The lock is released automatically when that process exits.)") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def kill_point(point: str, iteration: int) -> None:
    """SIGKILLs this process if ``FREE_JAX_KILL_AT`` is ``<point>:<iteration>`` (fault tests only)."""
    if os.environ.get(KILL_AT_ENV) == f"{point}:{iteration}":
        os.kill(os.getpid(), signal.SIGKILL)
