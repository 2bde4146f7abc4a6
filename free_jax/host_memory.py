"""Returning freed host memory to the operating system after big compiles (on in the binaries).

On Linux, the C library's allocator (glibc's malloc) keeps the memory a process frees in its
arenas for reuse instead of giving it back. XLA's compiler allocates and frees a lot while it
builds a big program: after the free suite's recovery program compiles (CPU, CIFAR-FS size), the
process holds about 450 MiB more than the program itself needs, in fragments that the program's
temporary buffers do not reuse. So the run's peak is the compiler's leftovers plus the program's
temporaries. ``malloc_trim(0)`` hands the freed pages back (BENCHMARKS.md, "Where the free suite's
memory goes").

``release_after_compiles`` asks for that after every compilation (or load from the persistent
cache) that took at least ``min_seconds``, through JAX's monitoring events, so it happens before
the program's first run. Small programs are skipped: a trim of a 1 GiB heap takes about 60 ms
on a 2-core CPU. Results do not change: only freed memory is returned.

Elsewhere (no glibc: macOS, musl) the functions do nothing and say so. ``FREE_JAX_RELEASE_MEMORY=off``
turns it off in the binaries (to measure the difference).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache

import jax

ENV_VAR = "FREE_JAX_RELEASE_MEMORY"
# JAX records this event after each backend compilation or persistent-cache load
# (jax._src.dispatch.BACKEND_COMPILE_EVENT), in the thread that will then run the program.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_installed: dict[str, float] = {}     # {"min_seconds": threshold} once the listener is registered
releases = {"count": 0}               # how often freed memory was released (the free benchmark reports it)


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Gives the pages of memory this process has freed back to the operating system
    (``malloc_trim(0)``). Returns False where the C library cannot (nothing is done)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    releases["count"] += 1
    return True


def _on_duration(event: str, duration: float, **_) -> None:
    if event == COMPILE_EVENT and duration >= _installed.get("min_seconds", float("inf")):
        release_freed_memory()


def release_after_compiles(min_seconds: float = 0.5) -> bool:
    """From now on, releases freed memory after each compilation that takes ≥ ``min_seconds``.
    Returns whether it is on: False where ``malloc_trim`` is missing or ``$FREE_JAX_RELEASE_MEMORY``
    is "off" (then it is off, also if an earlier call turned it on). Calling it again changes the
    threshold; it never registers twice."""
    if min_seconds < 0:
        raise ValueError(f"min_seconds={min_seconds}; it must be ≥ 0 (0 releases after every compile)")
    if os.environ.get(ENV_VAR, "").strip().lower() in ("off", "0", "false", "none") or _malloc_trim() is None:
        if _installed:
            _installed["min_seconds"] = float("inf")   # turned off after having been on
        return False
    if not _installed:
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
    _installed["min_seconds"] = float(min_seconds)
    return True
