"""One FREE iteration (docs/algorithm.md §2): FIVE recovery → bank → BELL alignment → MAML replay.

Each phase is a pure jitted function of the state; ``free_iteration`` is their composition in
one jitted program. The training loop runs the phases one after the other so it can report
the wall time of each; both paths compute the same numbers (tests/test_training.py).
Randomness: the iteration key ``fold_in(key, step)`` is split into (recovery, alignment, replay).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Sequence

import jax
import optax

from free_jax import memory
from free_jax.inversion import InversionConfig, invert_and_meta_update
from free_jax.meta.alignment import ALIGN_OPTIMIZERS, alignment_gradient
from free_jax.meta.replay import ReplayConfig, replay, replay_batch, replay_on_host
from free_jax.training.state import FreeState, outer_optimizer
from free_jax.zoo.group import TeacherGroup


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Everything the jitted iteration reads (hashable: a static argument)."""

    inversion: InversionConfig
    replay: ReplayConfig
    outer_lr: float = 1e-3
    align_lr: float = 1e-3
    align_optimizer: str = "adam"     # inner optimiser of θ̃: "adam" or "sgd" (meta.alignment)
    beta_align: float = 67.0
    tau: float = 1.0

    def __post_init__(self):
        if self.align_optimizer not in ALIGN_OPTIMIZERS:
            raise ValueError(f"align_optimizer={self.align_optimizer!r}; choose one of {ALIGN_OPTIMIZERS}")


def _keys(state: FreeState):
    return jax.random.split(state.iteration_key(), 3)


@functools.partial(jax.jit, static_argnames=("config", "warmup"), donate_argnames=("state",))
def recover_phase(state: FreeState, groups: Sequence[TeacherGroup], config: StepConfig, warmup: bool):
    """FIVE for the sampled teachers, the generator meta-update, and (after warm-up) the bank add.

    Returns (state, per-group recovered images, metrics). During warm-up nothing is stored.
    """
    inversion_key = _keys(state)[0]
    gen_params, gen_opt_state, result = invert_and_meta_update(
        state.gen_params, state.gen_opt_state, groups, inversion_key, config.inversion, warmup,
        None if warmup else state.meta_learner)
    bank = state.bank if warmup else memory.add(state.bank, result.images, result.labels)
    state = state.replace(gen_params=gen_params, gen_opt_state=gen_opt_state, bank=bank)
    metrics = {f"inv_{name}": value for name, value in result.metrics.items()}
    return state, result.per_group_images, metrics


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def align_phase(state: FreeState, groups: Sequence[TeacherGroup], per_group_images, config: StepConfig):
    """BELL alignment: θ ← Adam(θ, β_align · (θ − θ̃)) with θ̃ distilled from every teacher in turn
    (one step of ``config.align_optimizer`` per teacher)."""
    align_key = _keys(state)[1]
    inversion = config.inversion
    gradient, metrics = alignment_gradient(
        state.meta_learner, groups, per_group_images, align_key, inner_lr=config.align_lr,
        beta_align=config.beta_align, tau=config.tau, crop_padding=inversion.crop_padding, flip=inversion.flip,
        inner_optimizer=config.align_optimizer)
    metrics = {**metrics, "kd_update_norm": optax.tree.norm(gradient)}  # non-finite ⇒ this phase failed
    updates, meta_opt_state = outer_optimizer(config.outer_lr).update(
        gradient, state.meta_opt_state, state.meta_learner.params)
    params = optax.apply_updates(state.meta_learner.params, updates)
    state = state.replace(meta_learner=state.meta_learner.replace_params(params), meta_opt_state=meta_opt_state)
    return state, metrics


def _replay_in_one_program(state: FreeState, config: StepConfig):
    """BELL replay, all R meta-batches inside the caller's jitted program (the fused iteration)."""
    params, meta_opt_state, metrics = replay(state.meta_learner, state.meta_opt_state,
                                             outer_optimizer(config.outer_lr), state.bank, _keys(state)[2],
                                             config.replay)
    state = state.replace(meta_learner=state.meta_learner.replace_params(params),
                          meta_opt_state=meta_opt_state)
    return state, metrics


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def replay_batch_phase(state: FreeState, index: jax.Array, config: StepConfig):
    """One replay meta-batch (number ``index``) through the persistent outer Adam."""
    params, meta_opt_state, metrics = replay_batch(state.meta_learner, state.meta_opt_state,
                                                   outer_optimizer(config.outer_lr), state.bank, _keys(state)[2],
                                                   index, config.replay)
    state = state.replace(meta_learner=state.meta_learner.replace_params(params),
                          meta_opt_state=meta_opt_state)
    return state, metrics


def replay_phase(state: FreeState, config: StepConfig):
    """BELL replay: MAML meta-batches from the bank through the same persistent Adam.

    ``free_jax.meta.replay.replay_on_host`` over the jitted ``replay_batch_phase``: computes what
    the fused iteration's in-program ``replay`` computes, several times faster on XLA:CPU (see
    that module).
    """
    return replay_on_host(lambda state, index: replay_batch_phase(state, index, config), state, config.replay)


def advance(state: FreeState) -> FreeState:
    return state.replace(step=state.step + 1)


def _iteration(state, groups, config, warmup):
    state, per_group_images, metrics = recover_phase.__wrapped__(state, groups, config, warmup)
    if not warmup:
        state, align_metrics = align_phase.__wrapped__(state, groups, per_group_images, config)
        state, replay_metrics = _replay_in_one_program(state, config)
        metrics = {**metrics, **align_metrics, **replay_metrics}
    return advance(state), metrics


free_iteration = jax.jit(_iteration, static_argnames=("config", "warmup"), donate_argnames=("state",))
free_iteration.__doc__ = """One whole FREE iteration as one jitted program: (state, groups) -> (state, metrics).

During warm-up only FIVE runs (no adversarial term, nothing stored, θ untouched)."""


class PhaseTimer:
    """``timer(name, fn)``: runs ``fn()``, waits for its arrays, and appends the wall seconds to
    ``timer.seconds[name]`` (the per-phase times of the training loop and the benchmark)."""

    def __init__(self):
        self.seconds = collections.defaultdict(list)

    def __call__(self, name: str, fn):
        begin = time.perf_counter()
        out = jax.block_until_ready(fn())
        self.seconds[name].append(time.perf_counter() - begin)
        return out


def run_phases(state: FreeState, groups, config: StepConfig, warmup: bool, timer=None):
    """The same iteration as ``free_iteration`` but phase by phase, timing each when ``timer``
    (a callable ``timer(phase_name, fn) -> result``) is given."""
    timer = timer or (lambda name, fn: fn())
    state, per_group_images, metrics = timer("recovery", lambda: recover_phase(state, groups, config, warmup))
    if not warmup:
        state, align_metrics = timer("alignment", lambda: align_phase(state, groups, per_group_images, config))
        state, replay_metrics = timer("replay", lambda: replay_phase(state, config))
        metrics = {**metrics, **align_metrics, **replay_metrics}
    return advance(state), metrics
