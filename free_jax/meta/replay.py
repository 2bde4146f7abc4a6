"""BELL, part 2: MAML replay on the memory bank (docs/algorithm.md §2.3).

Each meta-batch samples ``tasks_per_batch`` N-way K-shot tasks from the bank, adapts θ on each
support set (``free_jax.meta.maml``, second order by default), and applies
∇_θ Σ_tasks L_query(θ_adapted) through the persistent outer optimiser, summing the tasks'
gradients as they are taken (``maml.per_task_gradients``: one task's residuals alive at a time on
CPU, where the tasks run as a ``lax.map``).

Budget: a fixed R meta-batches per iteration (the default), or the released code's patience
rule — continue until the training query accuracy has not improved for ``patience``
meta-batches in a row — capped at R. Meta-batch ``i`` draws its tasks with
``fold_in(key, i)``, so the two ways of running the R meta-batches compute the same thing:

- ``replay``: all of them inside one jitted program (``lax.scan`` / ``lax.while_loop``); used by
  the fused ``free_iteration``;
- ``replay_on_host``: one jitted ``replay_batch`` per meta-batch from a Python loop (what the
  training loop runs, ``free_jax.training.step.replay_phase``). The host loop was chosen when
  XLA:CPU ran convolution gradients slowly inside loop bodies (BENCHMARKS.md, "Convolutions
  inside loops"); it costs one dispatch per meta-batch.

Precision: the meta-gradient goes through the Hessian of the support loss, an ill-conditioned
product that reduced-precision matmuls (TF32, the default for float32 on recent NVIDIA GPUs; bf16
passes on TPUs) can swamp, so replay's matrix products and convolutions are traced at
``REPLAY_MATMUL_PRECISION`` ("highest": full float32). On CPU that is what float32 computes anyway
(the same numbers, bit for bit: tests/test_maml.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from free_jax import memory
from free_jax.data.task import Task
from free_jax.meta import maml
from free_jax.models.learner import MetaLearner
from free_jax.sharding import split_over_tasks

REPLAY_MATMUL_PRECISION = "highest"


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """MAML replay settings (hashable: a static jit argument)."""

    way: int = 5
    shot: int = 1
    query: int = 15
    tasks_per_batch: int = 10
    batches: int = 10          # R, the fixed budget (or the cap with patience)
    patience: int = 0          # > 0: the released code's rule, capped at ``batches``
    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    inner_loop: str = "unroll"  # the inner SGD steps as unrolled Python ("unroll") or ``lax.scan`` ("scan")
    strategy: str = "auto"
    mesh: Any = None           # a ``tasks`` mesh (free_jax.sharding) to split each meta-batch's tasks over


def replay_batch(meta_learner: MetaLearner, opt_state, optimizer: optax.GradientTransformation,
                 bank: memory.MemoryBank, key: jax.Array, index, config: ReplayConfig):
    """Meta-batch number ``index``: sample ``tasks_per_batch`` tasks with ``fold_in(key, index)``,

        g = ∇_θ Σ_tasks L_query(θ − α ∇_θ L_support(θ) …)   (``inner_steps`` SGD steps, α = inner_lr),

    and one step of the persistent outer optimiser. Returns (params, opt_state, metrics) with the
    meta-batch's mean query ``loss`` and ``accuracy``. With ``config.mesh`` the tasks are split
    over its devices: each samples and adapts its share, the gradients are summed over devices.
    """
    params = meta_learner.params
    task_keys = jax.random.split(jax.random.fold_in(key, index), config.tasks_per_batch)

    def body(local_keys, mask, shared):
        """This device's tasks, sampled here from the replicated bank; ∇_θ of their (masked) loss sum."""
        meta_learner, bank = shared
        tasks = Task(*memory.sample_tasks_with_keys(bank, local_keys, config.way, config.shot, config.query))

        with jax.default_matmul_precision(REPLAY_MATMUL_PRECISION):      # see the module docstring
            grads, per_task = maml.per_task_gradients(
                meta_learner.logits_fn(), meta_learner.params, tasks, config.inner_steps, config.inner_lr,
                config.first_order, config.inner_loop, strategy=config.strategy, mask=mask)
        return per_task, grads

    (losses, accuracies), grads = split_over_tasks(body, task_keys, config.mesh, (meta_learner, bank))
    metrics = {"loss": jnp.mean(losses), "accuracy": jnp.mean(accuracies)}
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics


def _patience_update(best, since_best, accuracy):
    """The released code's rule after one meta-batch: the best training query accuracy so far and
    how many meta-batches in a row have not beaten it (stop once that reaches ``patience``)."""
    return jnp.maximum(best, accuracy), jnp.where(accuracy > best, 0, since_best + 1)


def _summary(loss_sum, accuracy_sum, count):
    return {"replay_loss": loss_sum / count, "replay_accuracy": accuracy_sum / count,
            "replay_batches": jnp.asarray(count, jnp.int32)}


def replay(meta_learner: MetaLearner, opt_state, optimizer: optax.GradientTransformation,
           bank: memory.MemoryBank, key: jax.Array, config: ReplayConfig):
    """Runs the replay meta-batches inside the caller's jitted program; returns
    (params, opt_state, metrics).

    The caller guarantees (on the host, ``memory.check_can_sample``) that at least ``way`` bank
    classes hold ``shot + query`` images. metrics: mean query loss/accuracy over the batches run
    and ``replay_batches`` (how many ran).
    """
    def step(params, opt_state, index):
        return replay_batch(meta_learner.replace_params(params), opt_state, optimizer, bank, key, index, config)

    params = meta_learner.params
    if config.patience <= 0:
        def body(carry, index):
            params, opt_state = carry
            params, opt_state, metrics = step(params, opt_state, index)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), jnp.arange(config.batches))
        return params, opt_state, _summary(jnp.sum(metrics["loss"]), jnp.sum(metrics["accuracy"]), config.batches)

    def cond(carry):
        _, _, count, since_best, _, _, _ = carry
        return (count < config.batches) & (since_best < config.patience)

    def body(carry):
        params, opt_state, count, since_best, best, loss_sum, acc_sum = carry
        params, opt_state, metrics = step(params, opt_state, count)
        best, since_best = _patience_update(best, since_best, metrics["accuracy"])
        return (params, opt_state, count + 1, since_best, best,
                loss_sum + metrics["loss"], acc_sum + metrics["accuracy"])

    zero = jnp.zeros((), jnp.float32)
    params, opt_state, count, _, _, loss_sum, acc_sum = jax.lax.while_loop(
        cond, body, (params, opt_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), -jnp.ones(()), zero, zero))
    return params, opt_state, _summary(loss_sum, acc_sum, count)


def replay_on_host(run_batch, carry, config: ReplayConfig):
    """The same budget as ``replay``, driven from Python: ``carry, metrics = run_batch(carry, index)``
    runs meta-batch ``index`` (a traced int32, so one compiled program serves every index), e.g.
    a jitted ``replay_batch``. Returns (carry, metrics) with ``replay``'s metrics. The fixed budget
    never waits for the device; the patience rule reads each meta-batch's result (one sync each).
    """
    loss_sum = accuracy_sum = 0.0
    best, since_best, count = -1.0, 0, 0
    while count < config.batches:
        # A numpy index: the same on every process, so a multi-process run passes it without a check.
        carry, metrics = run_batch(carry, np.int32(count))
        loss_sum, accuracy_sum, count = loss_sum + metrics["loss"], accuracy_sum + metrics["accuracy"], count + 1
        if config.patience > 0:
            best, since_best = _patience_update(best, since_best, metrics["accuracy"])
            if int(since_best) >= config.patience:
                break
    return carry, _summary(loss_sum, accuracy_sum, count)
