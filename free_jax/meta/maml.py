"""MAML: SGD adaptation on a support set and the meta-gradient of the query loss through it.

For one task with support (x_s, y_s) and query (x_q, y_q), ``steps`` = S SGD steps at lr α:

    θ_0 = θ,   θ_{s+1} = θ_s − α ∇_θ CE(f(θ_s, x_s), y_s),   L_task(θ) = CE(f(θ_S, x_q), y_q)

The meta-gradient ∇_θ L_task differentiates through the inner updates (second order, the
default: it contains the Hessian-vector products ∏_s (I − α H_s)). The first-order option
(FOMAML) treats each inner gradient as a constant, so ∇_θ L_task ≈ ∇_{θ_S} L_task. A meta-batch
sums L_task over its tasks (docs/algorithm.md §2.3).

All loops run inside jit. The inner loop is unrolled Python by default; ``inner_loop="scan"``
keeps compile time flat for long loops. On XLA:CPU the scan was 2-4× slower until the models'
convolutions got loop-friendly gradients (``free_jax.models.conv``); now it runs a 10-task
second-order meta-batch as fast as the unrolled loop and compiles 3.6× faster (BENCHMARKS.md,
maml suite). Tasks of a meta-batch are mapped
with ``free_jax.vectorize.map_leading`` (vmap on accelerators). A meta-gradient takes each task's
gradient inside that map and sums them (``per_task_gradients``), which on CPU runs as ``lax.map``:
one task's residuals alive at a time (BENCHMARKS.md, "Memory").
"""
from __future__ import annotations

from typing import Callable, Literal, get_args

import jax
import jax.numpy as jnp

from free_jax import vectorize
from free_jax.data.task import Task
from free_jax.losses import accuracy, cross_entropy

LogitsFn = Callable[[object, jnp.ndarray], jnp.ndarray]  # (params, images01) -> logits
# What strategy "auto" maps ``per_task_gradients``' tasks with on CPU (free_jax.vectorize): one task
# at a time, each task's residuals freed after its own backward pass (BENCHMARKS.md, "Memory").
TASK_GRADIENTS_ON_CPU = "lax_map"
InnerLoop = Literal["unroll", "scan"]
INNER_LOOPS: tuple[str, ...] = get_args(InnerLoop)


def adapt(logits_fn: LogitsFn, params, support_x, support_y, steps: int, lr: float,
          first_order: bool = False, inner_loop: InnerLoop = "unroll"):
    """``steps`` SGD steps ``θ ← θ − lr ∇ CE(f(θ, x_s), y_s)`` from ``params``; returns θ_S.

    Args:
      logits_fn: pure ``f(params, images01) -> logits``.
      first_order: stop gradients through the inner gradients (FOMAML).
      inner_loop: "unroll" (Python loop, the default) or "scan" (``lax.scan``: the same speed on
        CPU, a far smaller program, faster to compile; BENCHMARKS.md).
    """

    def sgd_step(current, _=None):
        grads = jax.grad(lambda p: cross_entropy(logits_fn(p, support_x), support_y))(current)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, current, grads), None

    if inner_loop == "scan":
        params, _ = jax.lax.scan(sgd_step, params, None, length=steps)
        return params
    if inner_loop != "unroll":
        raise ValueError(f"inner_loop must be one of {INNER_LOOPS}, got {inner_loop!r}")
    for _ in range(steps):
        params, _ = sgd_step(params)
    return params


def task_loss(logits_fn: LogitsFn, params, task: Task, steps: int, lr: float,
              first_order: bool = False, inner_loop: InnerLoop = "unroll"):
    """Query loss at the adapted weights, L_task(θ) above, and the query accuracy (aux)."""
    adapted = adapt(logits_fn, params, task.support_x, task.support_y, steps, lr, first_order, inner_loop)
    logits = logits_fn(adapted, task.query_x)
    return cross_entropy(logits, task.query_y), accuracy(logits, task.query_y)


def meta_batch_loss(logits_fn: LogitsFn, params, tasks: Task, steps: int, lr: float,
                    first_order: bool = False, inner_loop: InnerLoop = "unroll",
                    strategy: vectorize.Strategy = "auto"):
    """Σ_tasks L_task(θ) over stacked ``tasks`` (leading task axis); aux: per-task accuracies."""
    losses, accuracies = vectorize.map_leading(
        lambda task: task_loss(logits_fn, params, task, steps, lr, first_order, inner_loop),
        tasks, strategy=strategy)
    return jnp.sum(losses), (losses, accuracies)


def task_strategy(strategy: vectorize.Strategy = "auto") -> str:
    """The strategy ``per_task_gradients`` maps a meta-batch's tasks with: "auto" is
    ``TASK_GRADIENTS_ON_CPU`` on CPU and vmap on accelerators (``free_jax.vectorize.resolve``)."""
    return vectorize.resolve(strategy, cpu=TASK_GRADIENTS_ON_CPU)


def per_task_gradients(logits_fn: LogitsFn, params, tasks: Task, steps: int, lr: float,
                       first_order: bool = False, inner_loop: InnerLoop = "unroll",
                       strategy: vectorize.Strategy = "auto", mask=None):
    """Σ_{real tasks t} ∇_θ L_t(θ), each task's gradient taken inside the map over tasks, with the
    per-task query losses and accuracies: (grads, (losses, accuracies)).

    The same sum as ∇_θ Σ_t L_t (``meta_batch_loss`` under ``jax.grad``), accumulated task by
    task: a task's forward residuals (every inner step's activations, which the second-order
    backward pass reads) are needed only until its own backward pass, instead of all tasks'
    until the end of one backward pass over the meta-batch (BENCHMARKS.md, "Memory").
    ``mask``: (num_tasks,) bool, False for the padding tasks of a mesh (their gradients are
    dropped); None: every task is real.
    """
    num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    mask = jnp.ones((num_tasks,), bool) if mask is None else mask

    def one_task(task, real):
        (loss, accuracy_), grads = jax.value_and_grad(
            lambda p: task_loss(logits_fn, p, task, steps, lr, first_order, inner_loop), has_aux=True)(params)
        return loss, accuracy_, jax.tree_util.tree_map(lambda g: jnp.where(real, g, 0), grads)

    losses, accuracies, grads = vectorize.map_leading(one_task, tasks, mask, strategy=strategy,
                                                      cpu=TASK_GRADIENTS_ON_CPU)
    return jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), grads), (losses, accuracies)


def meta_gradient(logits_fn: LogitsFn, params, tasks: Task, steps: int, lr: float,
                  first_order: bool = False, inner_loop: InnerLoop = "unroll",
                  strategy: vectorize.Strategy = "auto"):
    """∇_θ Σ_tasks L_task(θ) and metrics {"loss": mean query loss, "accuracy": mean query accuracy}."""
    grads, (losses, accuracies) = per_task_gradients(logits_fn, params, tasks, steps, lr, first_order,
                                                     inner_loop, strategy)
    return grads, {"loss": jnp.mean(losses), "accuracy": jnp.mean(accuracies)}


def adapted_query_accuracy(logits_fn: LogitsFn, params, tasks: Task, steps: int, lr: float,
                           inner_loop: InnerLoop = "unroll", strategy: vectorize.Strategy = "auto"):
    """Per-task query accuracy after adapting from ``params`` (evaluation: no outer gradient)."""
    _, accuracies = vectorize.map_leading(
        lambda task: task_loss(logits_fn, params, task, steps, lr, True, inner_loop),
        tasks, strategy=strategy)
    return accuracies
