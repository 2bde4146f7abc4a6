"""JAX's persistent compilation cache, on by default in free_jax's binaries.

A FREE run compiles a few dozen XLA programs (each phase, warm-up and after, evaluation);
on CPU that is over a minute before the first iteration. With the cache, a resumed, repeated
or similar run loads the compiled programs from disk instead (BENCHMARKS.md, "compile").
Cached entries are the compiled programs themselves, so results do not change; JAX keys them by
the program, the backend, the jax/jaxlib versions and the compile options, so a stale entry is
never used, and the directory is safe to delete at any time (the next run compiles again).

Every program is cached, however quick its compile (``min_compile_seconds=0``): besides the few
big phase programs a run compiles a few hundred small ones (eager operations, checks), which add
up to seconds (measured in BENCHMARKS.md, "Test suite: XLA's -O0 for the tests"); they take a few
megabytes.

Location, first that is set: ``directory`` argument; ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own
variable, also honoured by JAX itself); ``$FREE_JAX_XLA_CACHE_DIR``; else ``<data cache>/xla``
(``free_jax.data.cache.cache_root()``, i.e. ``$FREE_JAX_CACHE_DIR`` or ``~/.cache/free_jax``).
``FREE_JAX_XLA_CACHE_DIR=off`` turns it off.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import jax

from free_jax.data.cache import cache_root

CACHE_ENV_VAR = "FREE_JAX_XLA_CACHE_DIR"
OFF = ("off", "none", "0", "false")


def cache_directory(directory: str | os.PathLike | None = None) -> Path | None:
    """Where the cache lives (see the module docstring), or None when it is turned off."""
    chosen = directory or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get(CACHE_ENV_VAR)
    if chosen is not None and str(chosen).strip().lower() in OFF:
        return None
    return Path(chosen).expanduser() if chosen else cache_root() / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None, *,
                             min_compile_seconds: float = 0.0) -> Path | None:
    """Turns JAX's persistent compilation cache on for programs that take ≥ ``min_compile_seconds``
    to compile; returns its directory (None: turned off, or the directory cannot be created —
    then the run compiles as usual, with a warning)."""
    path = cache_directory(directory)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logging.warning("compilation cache %s cannot be created (%s); compiling without it", path, error)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return path
