"""Map a function over a leading axis with the strategy the backend runs fastest.

Per-task weights (teachers, adapted fast weights, per-teacher generators) make ``jax.vmap``
turn convolutions into grouped convolutions, which XLA:CPU runs ~6× slower than a Python loop
unrolled inside jit; ``lax.map`` (a scan) ran ~10× slower until the models' convolutions got
loop-friendly gradients (``free_jax.models.conv``), and the gradient of a loss summed over a
``lax.map`` stays 1.3× slower than the loop (its backward pass is a second, reversed loop). GPUs
normally favour vmap. "auto" picks per backend, and on CPU per map: a map whose every item takes a
whole gradient of its own (MAML replay's tasks, ``free_jax.meta.maml.per_task_gradients``) runs as
``lax.map`` there, which at CIFAR-FS size ran a 10-task second-order meta-batch as fast as the
loop or 3-10 % faster, compiled it 8× faster and needed an eighth of its temporary memory (BENCHMARKS.md,
"Memory"); every other map is the loop.

Every strategy computes the same numbers: tests/test_strategy_parity.py checks each phase of FREE
under "loop", "vmap" and "lax_map", jitted, against the eager loop in float64 (≤ 1e-9 relative),
and on accelerators a start-up self-check (free_jax/meta/selfcheck.py) repeats the meta-gradient
comparison on the backend actually used. An earlier version of this note blamed a "vmap
miscompile on XLA:CPU" and called the loop fine; both were wrong. The cause was our own 2×2
max-pool (reshape + max), whose second derivative XLA's algebraic simplifier miscompiles under jit
with the loop and vmap alike (docs/exact_gradients.md); the pooling is now written so that its
derivatives are exact, and vmap is merely slow on CPU.
"""
from __future__ import annotations

import logging
from typing import Callable, Literal

import jax
import jax.numpy as jnp

Strategy = Literal["auto", "vmap", "loop", "lax_map"]
STRATEGIES = ("auto", "vmap", "loop", "lax_map")


def resolve(strategy: Strategy, cpu: str = "loop") -> str:
    """"auto" → ``cpu`` on CPU ("loop" unless the caller's map runs faster another way there),
    "vmap" on accelerators; other names pass through (validated)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown vectorisation strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == "auto":
        return cpu if jax.default_backend() == "cpu" else "vmap"
    if strategy == "vmap" and jax.default_backend() == "cpu":
        logging.warning("vmap over per-task weights is slow on XLA:CPU (grouped convolutions, ~10x a loop); "
                        "prefer strategy='loop' there (see free_jax/vectorize.py)")
    return strategy


def map_leading(fn: Callable, *stacked_args, strategy: Strategy = "auto", cpu: str = "loop",
                in_flight: int = 0):
    """``stack([fn(*(a[i] for a in stacked_args)) for i in range(n)])`` over pytrees.

    Every leaf of every argument has the same leading size n; outputs are stacked on axis 0.
    Call it inside ``jax.jit``: "loop" unrolls n calls into the traced program. ``cpu``: what
    "auto" means on CPU (``resolve``).

    ``in_flight`` ("loop" only; 0 = no limit): item i's floating-point inputs wait for every
    output of item i − in_flight (``after``), so at most ``in_flight`` items run at once and XLA
    can reuse the earlier items' temporary buffers. Unlimited, XLA:CPU's scheduler interleaves the
    unrolled items and keeps every item's temporaries alive together (BENCHMARKS.md, "Memory").
    """
    if in_flight < 0:
        raise ValueError(f"in_flight must be >= 0 (0 = no limit), got {in_flight}")
    strategy = resolve(strategy, cpu)
    if strategy == "vmap":
        return jax.vmap(fn)(*stacked_args)
    if strategy == "lax_map":
        return jax.lax.map(lambda args: fn(*args), stacked_args)
    n = jax.tree_util.tree_leaves(stacked_args)[0].shape[0]
    outputs = []
    for i in range(n):
        args = jax.tree_util.tree_map(lambda leaf: leaf[i], stacked_args)
        if in_flight and i >= in_flight:
            args = after(outputs[i - in_flight], args)
        outputs.append(fn(*args))
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *outputs)


def after(done, values):
    """``values``, made to depend on every leaf of ``done``: each floating-point leaf v becomes
    v + 0·s, with s = Σ over the numeric leaves of ``done`` of their first element (no gradient
    flows to ``done``).

    A data dependency, so the compiler cannot start work on ``values`` before ``done`` exists;
    ``lax.optimization_barrier`` did not order XLA:CPU's schedule here (the recovery program's
    temporaries were unchanged with it). The values are unchanged whenever s is finite (−0.0
    becomes +0.0); a non-finite s (a diverged earlier item) makes them NaN.
    """
    numeric = [leaf for leaf in jax.tree_util.tree_leaves(done)
               if leaf.size and (jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == jnp.bool_)]
    if not numeric:
        return values
    zero = 0 * jax.lax.stop_gradient(sum(jnp.ravel(leaf)[0].astype(jnp.float32) for leaf in numeric))
    tie = lambda v: v + zero.astype(v.dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v
    return jax.tree_util.tree_map(tie, values)
