"""Meta-training the generator alone: FIVE's warm-up iterations, with no meta-learner.

Iteration i draws teachers, adapts φ k steps to each (no adversarial term) and makes one
meta-update of φ (``invert_and_meta_update(..., warmup=True)``). FREE's first W iterations do this
inside its training step; the recovered-image demo, the inversion benchmark and the FIVE claim test
meta-train a generator with ``meta_train_warmup``.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax

from free_jax.inversion.config import InversionConfig
from free_jax.inversion.five import invert_and_meta_update
from free_jax.zoo.group import TeacherGroup


@functools.partial(jax.jit, static_argnames=("config",))
def warmup_meta_step(gen_params, gen_opt_state, groups: Sequence[TeacherGroup], key: jax.Array,
                     config: InversionConfig):
    """One warm-up iteration on ``groups``: FIVE without the adversarial term, then one meta-update.

    Returns:
      (gen_params, gen_opt_state, metrics) with the metrics of ``InversionResult``.
    """
    gen_params, gen_opt_state, result = invert_and_meta_update(gen_params, gen_opt_state, groups, key, config,
                                                               warmup=True)
    return gen_params, gen_opt_state, result.metrics


def meta_train_warmup(gen_params, gen_opt_state, teachers_of: Callable[[int], Sequence[TeacherGroup]],
                      iterations: int, config: InversionConfig, *,
                      key_of: Callable[[int], jax.Array] = jax.random.key,
                      on_iteration: Callable[[int, dict], None] | None = None, step=None):
    """``iterations`` warm-up iterations of the meta-generator (``warmup_meta_step``).

    Args:
      gen_params, gen_opt_state: φ and its persistent Adam state (``init_generator``).
      teachers_of: iteration -> the teacher groups of that iteration (called once per iteration, in order).
      iterations: how many. config: FIVE's settings.
      key_of: iteration -> its key (default ``jax.random.key(iteration)``).
      on_iteration: called with (iteration, metrics) after each; metrics stay on device (convert
        them only when shown, so the loop does not wait for every iteration).
      step: ``(gen_params, gen_opt_state, groups, key) -> (gen_params, gen_opt_state, metrics)``;
        default ``warmup_meta_step`` with ``config`` (a benchmark passes it compiled ahead of time).

    Returns:
      (gen_params, gen_opt_state) after the last iteration.
    """
    step = functools.partial(warmup_meta_step, config=config) if step is None else step
    for iteration in range(iterations):
        gen_params, gen_opt_state, metrics = step(gen_params, gen_opt_state, teachers_of(iteration),
                                                  key_of(iteration))
        if on_iteration is not None:
            on_iteration(iteration, metrics)
    return gen_params, gen_opt_state
