"""BELL, part 2: MAML replay on the memory bank (SPEC §2.3).

Each meta-batch samples ``tasks_per_batch`` N-way K-shot tasks from the bank, adapts θ on each
support set (``free_jax.meta.maml``, second order by default), and applies
∇_θ Σ_tasks L_query(θ_adapted) through the persistent outer optimiser.

Budget: a fixed R meta-batches per iteration (``lax.scan``; the default), or the released code's
patience rule — continue until the training query accuracy has not improved for ``patience``
meta-batches in a row — capped at ``max_batches`` (``lax.while_loop``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from free_jax import memory
from free_jax.meta import maml
from free_jax.meta.learner import MetaLearner


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
    strategy: str = "auto"


def _meta_batch_step(meta_learner: MetaLearner, optimizer: optax.GradientTransformation,
                     config: ReplayConfig, bank: memory.MemoryBank):
    logits_fn = meta_learner.logits_fn()

    def step(params, opt_state, key):
        support_x, support_y, query_x, query_y = memory.sample_tasks(
            bank, key, config.tasks_per_batch, config.way, config.shot, config.query)
        tasks = maml.Task(support_x, support_y, query_x, query_y)
        grads, metrics = maml.meta_gradient(logits_fn, params, tasks, config.inner_steps, config.inner_lr,
                                            config.first_order, strategy=config.strategy)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def replay(meta_learner: MetaLearner, opt_state, optimizer: optax.GradientTransformation,
           bank: memory.MemoryBank, key: jax.Array, config: ReplayConfig):
    """Runs the replay meta-batches; returns (params, opt_state, metrics).

    The caller guarantees (on the host, ``memory.check_can_sample``) that at least ``way`` bank
    classes hold ``shot + query`` images. metrics: mean query loss/accuracy over the batches run
    and ``batches`` (how many ran).
    """
    step = _meta_batch_step(meta_learner, optimizer, config, bank)
    params = meta_learner.params
    if config.patience <= 0:
        def body(carry, batch_key):
            params, opt_state = carry
            params, opt_state, metrics = step(params, opt_state, batch_key)
            return (params, opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state),
                                                     jax.random.split(key, config.batches))
        return params, opt_state, {"replay_loss": jnp.mean(metrics["loss"]),
                                   "replay_accuracy": jnp.mean(metrics["accuracy"]),
                                   "replay_batches": jnp.asarray(config.batches, jnp.int32)}

    def cond(carry):
        _, _, count, since_best, _, _, _ = carry
        return (count < config.batches) & (since_best < config.patience)

    def body(carry):
        params, opt_state, count, since_best, best, loss_sum, acc_sum = carry
        params, opt_state, metrics = step(params, opt_state, jax.random.fold_in(key, count))
        improved = metrics["accuracy"] > best
        return (params, opt_state, count + 1, jnp.where(improved, 0, since_best + 1),
                jnp.maximum(best, metrics["accuracy"]), loss_sum + metrics["loss"], acc_sum + metrics["accuracy"])

    zero = jnp.zeros((), jnp.float32)
    params, opt_state, count, _, _, loss_sum, acc_sum = jax.lax.while_loop(
        cond, body, (params, opt_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), -jnp.ones(()), zero, zero))
    return params, opt_state, {"replay_loss": loss_sum / count, "replay_accuracy": acc_sum / count,
                               "replay_batches": count}
