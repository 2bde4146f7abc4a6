"""File locks that share work between processes: ``claim`` (take it or skip it) and
``waiting_lock`` (wait for it).

Both are ``fcntl.flock`` on a file: the kernel releases the lock when the holding process exits
or dies (even by SIGKILL), so a crashed holder never leaves a stale lock, and its work is taken
up by the next process that asks. Used by a comparison's rows and a shared zoo build.
"""
from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path


@contextlib.contextmanager
def claim(path: str | Path):
    """Yields True while this process holds the lock on ``path`` (created), False at once if
    another process holds it (work that process is doing: skip it). Released on exit or death."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


@contextlib.contextmanager
def waiting_lock(path: str | Path, on_wait=None):
    """Holds the lock on ``path`` (created), waiting while another process holds it (calling
    ``on_wait()`` once, when it has to wait)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
