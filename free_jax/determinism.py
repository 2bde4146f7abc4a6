"""Bit-exact reruns and resumes on GPUs: XLA's deterministic GPU kernels, on by default in the binaries.

A resumed run computes exactly what an uninterrupted one does (tests/test_training.py) only if
every kernel is deterministic. On CPU they are; on NVIDIA GPUs some are not by default
(scatter-adds and reductions with atomics, autotuned convolution algorithms), so the same program
can round differently from one call to the next. ``--xla_gpu_deterministic_ops=true`` makes XLA
pick deterministic kernels (and turns off autotuning choices that vary), at some cost in speed.

``request_deterministic_gpu_ops`` adds the flag to ``XLA_FLAGS``; XLA reads that variable once,
when JAX first creates a backend, so the binaries call it at the top of ``main``. It leaves the
variable alone when the flag is already there (either value: the user's choice wins), when
``FREE_JAX_GPU_DETERMINISM=off``, and where no GPU can be used (no JAX GPU plugin installed, or
``JAX_PLATFORMS`` names no GPU platform): JAX's persistent compilation cache keys programs by
``XLA_FLAGS``, so a CPU run keeps sharing cached programs with library code that never sets it.
"""
from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

DETERMINISM_FLAG = "--xla_gpu_deterministic_ops"
OPT_OUT_ENV_VAR = "FREE_JAX_GPU_DETERMINISM"
GPU_PLATFORMS = ("cuda", "gpu", "rocm")


def gpu_plugin_installed() -> bool:
    """Whether a JAX GPU plugin (``jax-cuda12-plugin``, ``jax-cuda13-plugin``, ``jax-rocm*``) is installed."""
    names = {(dist.metadata["Name"] or "").lower().replace("_", "-") for dist in importlib.metadata.distributions()}
    return any(name.startswith(("jax-cuda", "jax-rocm")) for name in names)


def request_deterministic_gpu_ops(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Adds ``--xla_gpu_deterministic_ops=true`` to ``environ["XLA_FLAGS"]`` (module docstring);
    returns whether it did. Call before anything creates a JAX backend."""
    if environ.get(OPT_OUT_ENV_VAR, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms and not any(name in platforms for name in GPU_PLATFORMS):
        return False
    if not gpu_plugin_installed():
        return False
    flags = environ.get("XLA_FLAGS", "").split()
    if any(flag.split("=")[0] == DETERMINISM_FLAG for flag in flags):
        return False
    environ["XLA_FLAGS"] = " ".join(flags + [f"{DETERMINISM_FLAG}=true"])
    return True
