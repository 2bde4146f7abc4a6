"""Start-up self-check: the compiled meta-gradient of the chosen strategy is the true one.

A wrong second-order meta-gradient does not crash anything: training runs, losses fall a little,
accuracies are a few points off. This happened here (docs/exact_gradients.md): a pooling layer
whose second derivative XLA's algebraic simplifier miscompiled put the jitted meta-gradient 6-60 %
away from the true one, under jit and worst under ``vmap``, the strategy accelerators use. So
before training on an accelerator, ``check_strategy`` compares, at tiny shapes (seconds),

    g_jit   = jit(∇_θ Σ_tasks L_task(θ))       with the run's strategy, architecture and width,
    g_eager = ∇_θ Σ_tasks L_task(θ)             op by op, tasks in a Python loop (no compiler passes),

and stops the run if ‖g_jit − g_eager‖ / ‖g_eager‖ exceeds a tolerance. It runs in float64 where
the backend has it (CPU, GPU; float32 with full-precision matmuls elsewhere), second order, with
batch-statistics BatchNorm: the conditions of the bug.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from free_jax.data.task import Task
from free_jax.meta import maml
from free_jax.models.learner import create_meta_learner

FLOAT64_BACKENDS = ("cpu", "gpu", "cuda", "rocm")
TOLERANCE = {"float64": 1e-6, "float32": 1e-2}   # the bug gave 0.06-0.7; rounding gives ≪ these


class StrategySelfCheckError(RuntimeError):
    """The compiled meta-gradient differs from the eager one on this backend."""


def _tasks(dtype, num_tasks=2, way=3, shot=2, query=2, size=16, channels=1) -> Task:
    keys = jax.random.split(jax.random.key(1), 3)
    prototypes = jax.random.uniform(keys[0], (num_tasks, way, 1, size, size, channels), dtype)

    def images(key, per_class):
        noise = 0.2 * jax.random.normal(key, (num_tasks, way, per_class, size, size, channels), dtype)
        return jnp.clip(prototypes + noise, 0, 1).reshape(num_tasks, way * per_class, size, size, channels)

    labels = lambda per_class: jnp.broadcast_to(jnp.repeat(jnp.arange(way), per_class), (num_tasks, way * per_class))
    return Task(images(keys[1], shot), labels(shot), images(keys[2], query), labels(query))


def meta_gradient_error(strategy: str, arch: str = "conv4", width: int | None = 8,
                        channels: int = 1) -> tuple[float, str]:
    """Relative L2 distance between the jitted meta-gradient under ``strategy`` and the eager loop's.

    Returns:
      (error, dtype name) at tiny shapes: 2 tasks of 3-way 2-shot, 16 px, 2 inner steps at lr 0.1.
    """
    use_float64 = jax.default_backend() in FLOAT64_BACKENDS
    with jax.enable_x64(use_float64), jax.default_matmul_precision("highest"):
        dtype = jnp.float64 if use_float64 else jnp.float32
        learner = create_meta_learner(jax.random.key(0), arch, 3, (16, 16, channels), [0.5] * channels,
                                      [0.25] * channels, width)
        learner = jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                         learner)
        tasks, logits_fn = _tasks(dtype, channels=channels), learner.logits_fn()

        def gradient(params, tasks, strategy):
            return maml.meta_gradient(logits_fn, params, tasks, steps=2, lr=0.1, strategy=strategy)[0]

        with jax.disable_jit():        # op by op: also the model calls, which are jitted programs otherwise
            eager = gradient(learner.params, tasks, "loop")
        jitted = jax.jit(gradient, static_argnums=2)(learner.params, tasks, strategy)
        flat = lambda tree: np.concatenate([np.ravel(np.asarray(x, np.float64))
                                            for x in jax.tree_util.tree_leaves(tree)])
        error = float(np.linalg.norm(flat(jitted) - flat(eager)) / np.linalg.norm(flat(eager)))
    return error, np.dtype(dtype).name


def check_strategy(strategy: str, arch: str = "conv4", width: int | None = 8, channels: int = 1, *,
                   force: bool = False, log=print) -> float | None:
    """Stops with ``StrategySelfCheckError`` if the compiled meta-gradient is wrong on this backend.

    Runs on non-CPU backends, or anywhere with ``force`` (CPU is covered by the test suite).

    Returns:
      The relative error measured, or None when skipped.
    """
    backend = jax.default_backend()
    if backend == "cpu" and not force:
        return None
    resolved = maml.task_strategy(strategy)
    error, dtype = meta_gradient_error(resolved, arch, width, channels)
    tolerance = TOLERANCE[dtype]
    if not error <= tolerance:
        raise StrategySelfCheckError(
            f"self-check failed on {backend} (jax {jax.__version__}): the jitted second-order meta-gradient under "
            f"strategy {resolved!r} is {error:.2e} (relative, {dtype}) away from the eager one, tolerance "
            f"{tolerance:.0e}. The compiled program is wrong on this backend; training would use wrong gradients. "
            "Try --config.strategy=loop or lax_map, and see docs/exact_gradients.md. "
            "(--config.self_check=False skips this check.)")
    log(f"[free] self-check on {backend}: {resolved} meta-gradient matches eager to {error:.1e} ({dtype})")
    return error
