"""Map a function over a leading axis with the strategy the backend runs fastest.

Per-task weights (teachers, adapted fast weights, per-teacher generators) make ``jax.vmap``
turn convolutions into grouped convolutions, which XLA:CPU runs ~10× slower than a Python loop
unrolled inside jit; ``lax.map`` (a scan) gives convolutions non-default layouts, ~4× slower
on CPU (../shared/MEASUREMENTS.md). GPUs normally favour vmap. "auto" picks per backend; every
strategy is meant to compute the same values, and tests compare them.

Known problem: on XLA:CPU (jaxlib 0.10.2) a *jitted* ``vmap`` over tasks of SGD adaptation of
the Conv4 meta-learner (parameters passed as jit arguments) returns wrong values (query logits
off by ~0.5), while eager vmap, the jitted loop and jitted ``lax.map`` agree to 1e-6
(tests/test_maml.py keeps a strict xfail that turns red once it is fixed). "auto" never picks
vmap on CPU; forcing it there logs a warning. Check vmap against "loop" on each new backend.
"""
from __future__ import annotations

import logging
from typing import Callable, Literal

import jax

Strategy = Literal["auto", "vmap", "loop", "lax_map"]
STRATEGIES = ("auto", "vmap", "loop", "lax_map")


def resolve(strategy: Strategy) -> str:
    """"auto" → "loop" on CPU, "vmap" on accelerators; other names pass through (validated)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown vectorisation strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == "auto":
        return "loop" if jax.default_backend() == "cpu" else "vmap"
    if strategy == "vmap" and jax.default_backend() == "cpu":
        logging.warning("vmap over per-task weights is slow and was seen to miscompile on XLA:CPU; "
                        "prefer strategy='loop' (see free_jax/vectorize.py)")
    return strategy


def map_leading(fn: Callable, *stacked_args, strategy: Strategy = "auto"):
    """``stack([fn(*(a[i] for a in stacked_args)) for i in range(n)])`` over pytrees.

    Every leaf of every argument has the same leading size n; outputs are stacked on axis 0.
    Call it inside ``jax.jit``: "loop" unrolls n calls into the traced program.
    """
    strategy = resolve(strategy)
    if strategy == "vmap":
        return jax.vmap(fn)(*stacked_args)
    if strategy == "lax_map":
        return jax.lax.map(lambda args: fn(*args), stacked_args)
    n = jax.tree_util.tree_leaves(stacked_args)[0].shape[0]
    outputs = [fn(*jax.tree_util.tree_map(lambda leaf: leaf[i], stacked_args)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *leaves: jax.numpy.stack(leaves), *outputs)
