"""One FREE iteration (docs/algorithm.md §2): FIVE recovery → bank → BELL alignment → MAML replay.

The recovery is the run method's (``free_jax.inversion.recovery``: FIVE, a fresh generator per
teacher, or pixel inversion; none for the oracle, which replays real tasks from a bank it is
given), and the meta-training objective is BELL (alignment + replay), replay alone or alignment
alone (``StepConfig.objective``); everything else is the same for every method.

Each phase is a pure jitted function of the state; ``free_iteration`` is their composition in
one jitted program. Both paths compute the same numbers (tests/test_training.py); the training
loop picks one with ``iteration_program``: on CPU the phases one after the other (it reports the
wall time of each, and the host-looped replay is faster there), on accelerators the fused
program (one dispatch per iteration, no host round-trip between phases).
Randomness: the iteration key ``fold_in(key, step)`` is split into (recovery, alignment, replay).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from free_jax import memory
from free_jax.inversion import InversionConfig
from free_jax.inversion.recovery import RECOVERIES, recover
from free_jax.meta.alignment import ALIGN_OPTIMIZERS, alignment_gradient
from free_jax.meta.replay import ReplayConfig, replay, replay_batch, replay_on_host
from free_jax.training.state import FreeState, outer_optimizer
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.slots import TeacherSlots

# The meta-training objectives: BELL = alignment then replay (docs/algorithm.md §2.3), or one of the two.
OBJECTIVES = ("bell", "replay", "align")
_ALIGNS, _REPLAYS = ("bell", "align"), ("bell", "replay")


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
    recovery: str | None = "five"     # a key of inversion.recovery.RECOVERIES; None: no recovery (oracle)
    objective: str = "bell"           # one of OBJECTIVES

    def __post_init__(self):
        if self.align_optimizer not in ALIGN_OPTIMIZERS:
            raise ValueError(f"align_optimizer={self.align_optimizer!r}; choose one of {ALIGN_OPTIMIZERS}")
        if self.recovery is not None and self.recovery not in RECOVERIES:
            raise ValueError(f"recovery={self.recovery!r}; choose one of {tuple(RECOVERIES)} or None")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective={self.objective!r}; choose one of {OBJECTIVES}")
        if self.recovery is None and self.objective != "replay":
            raise ValueError("without a recovery there are no teachers' images to align on: objective must be "
                             f"'replay', got {self.objective!r}")


def recovers(config: StepConfig, warmup: bool) -> bool:
    """Whether the iteration runs a recovery: always after warm-up; during it only for a recovery
    that meta-learns a generator (FIVE). Per-teacher recoveries have nothing to warm up, so their
    warm-up iterations are idle and every method gets the same replay budget."""
    return config.recovery is not None and (not warmup or RECOVERIES[config.recovery].meta_generator)


def _keys(state: FreeState):
    return jax.random.split(state.iteration_key(), 3)


def _recover(state: FreeState, groups, config: StepConfig, warmup):
    """``recover_phase``'s body. ``warmup``: a Python bool (the fused iteration's, whose warm-up
    is a program of its own) or a traced bool (``recover_phase``'s)."""
    inversion_key = _keys(state)[0]
    static = isinstance(warmup, bool)
    gen_params, gen_opt_state, result = recover(
        config.recovery, state.gen_params, state.gen_opt_state, groups, inversion_key, config.inversion, warmup,
        None if static and warmup else state.meta_learner, state.bank.image_shape)
    if static:
        bank = state.bank if warmup else memory.add(state.bank, result.images, result.labels)
    else:   # label -1 is outside the bank's classes, which ``memory.add`` drops: nothing stored in warm-up
        bank = memory.add(state.bank, result.images, jnp.where(warmup, -1, result.labels))
    state = state.replace(gen_params=gen_params, gen_opt_state=gen_opt_state, bank=bank)
    metrics = {f"inv_{name}": value for name, value in result.metrics.items()}
    return state, result, metrics


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def recover_phase(state: FreeState, groups: Sequence[TeacherGroup] | TeacherSlots, config: StepConfig,
                  warmup: bool | jax.Array):
    """The run's recovery for the sampled teachers (FIVE: with the generator meta-update), and
    (after warm-up) the bank add. ``groups``: stacked groups, or ``TeacherSlots`` (the training
    loop's: one program for every draw).

    ``warmup`` is an argument of the program, not a constant of it: FIVE's warm-up (no
    adversarial term, nothing stored) and the later iterations run one compiled program, the
    adversarial term behind a ``lax.cond`` (``five.inversion_loss``), so a run compiles (and a
    resumed run loads) one recovery program instead of two.

    Returns (state, the ``Recovered`` images, metrics). During warm-up nothing is stored.
    """
    return _recover(state, groups, config, jnp.asarray(warmup, bool))


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def align_phase(state: FreeState, groups: Sequence[TeacherGroup] | TeacherSlots, per_group_images,
                config: StepConfig):
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


def _replay_in_one_program(state: FreeState, config: StepConfig, bank=None):
    """BELL replay, all R meta-batches inside the caller's jitted program (the fused iteration);
    tasks from ``bank`` (default the state's)."""
    params, meta_opt_state, metrics = replay(state.meta_learner, state.meta_opt_state,
                                             outer_optimizer(config.outer_lr), state.bank if bank is None else bank,
                                             _keys(state)[2], config.replay)
    state = state.replace(meta_learner=state.meta_learner.replace_params(params),
                          meta_opt_state=meta_opt_state)
    return state, metrics


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def replay_batch_phase(state: FreeState, index: jax.Array, config: StepConfig, bank=None):
    """One replay meta-batch (number ``index``) through the persistent outer Adam, its tasks from
    ``bank`` (default the state's; the oracle passes its bank of real images)."""
    params, meta_opt_state, metrics = replay_batch(state.meta_learner, state.meta_opt_state,
                                                   outer_optimizer(config.outer_lr),
                                                   state.bank if bank is None else bank, _keys(state)[2],
                                                   index, config.replay)
    state = state.replace(meta_learner=state.meta_learner.replace_params(params),
                          meta_opt_state=meta_opt_state)
    return state, metrics


def replay_phase(state: FreeState, config: StepConfig, bank=None):
    """BELL replay: MAML meta-batches from the bank (default the state's) through the same persistent Adam.

    ``free_jax.meta.replay.replay_on_host`` over the jitted ``replay_batch_phase``: computes what
    the fused iteration's in-program ``replay`` computes, several times faster on XLA:CPU (see
    that module).
    """
    return replay_on_host(lambda state, index: replay_batch_phase(state, index, config, bank), state, config.replay)


def advance(state: FreeState) -> FreeState:
    return state.replace(step=state.step + 1)


def _iteration(state, groups, config, warmup, bank=None):
    metrics = {}
    if recovers(config, warmup):
        state, recovered, metrics = _recover(state, groups, config, warmup)
    if not warmup:
        if config.objective in _ALIGNS:
            state, align_metrics = align_phase.__wrapped__(state, groups, recovered.per_group_images, config)
            metrics = {**metrics, **align_metrics}
        if config.objective in _REPLAYS:
            state, replay_metrics = _replay_in_one_program(state, config, bank)
            metrics = {**metrics, **replay_metrics}
    return advance(state), metrics


free_iteration = jax.jit(_iteration, static_argnames=("config", "warmup"), donate_argnames=("state",))
free_iteration.__doc__ = """One whole iteration as one jitted program: (state, groups[, bank]) -> (state, metrics).

During warm-up only FIVE runs (no adversarial term, nothing stored, θ untouched); a per-teacher
recovery's warm-up iterations do nothing. ``bank``: replay's tasks (default the state's bank)."""


ITERATION_PROGRAMS = ("auto", "fused", "phased")


def iteration_program(choice: str, backend: str) -> str:
    """"fused" or "phased" for ``choice`` (one of ITERATION_PROGRAMS) on ``backend``
    (``jax.default_backend()``): "auto" fuses everywhere but on the CPU."""
    if choice not in ITERATION_PROGRAMS:
        raise ValueError(f"iteration={choice!r}; choose one of {ITERATION_PROGRAMS}")
    if choice != "auto":
        return choice
    return "phased" if backend == "cpu" else "fused"


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


def run_phases(state: FreeState, groups, config: StepConfig, warmup: bool, timer=None, bank=None):
    """The same iteration as ``free_iteration`` but phase by phase, timing each when ``timer``
    (a callable ``timer(phase_name, fn) -> result``) is given."""
    timer = timer or (lambda name, fn: fn())
    metrics = {}
    if recovers(config, warmup):
        state, recovered, metrics = timer("recovery", lambda: recover_phase(state, groups, config, warmup))
    if not warmup:
        if config.objective in _ALIGNS:
            state, align_metrics = timer("alignment", lambda: align_phase(state, groups, recovered.per_group_images,
                                                                          config))
            metrics = {**metrics, **align_metrics}
        if config.objective in _REPLAYS:
            state, replay_metrics = timer("replay", lambda: replay_phase(state, config, bank))
            metrics = {**metrics, **replay_metrics}
    return advance(state), metrics


def run_iteration(state: FreeState, groups, config: StepConfig, warmup: bool, program: str, timer=None, bank=None):
    """One iteration as ``program`` ("fused": ``free_iteration``, timed as the phase "iteration";
    "phased": ``run_phases``, each phase timed), timed when ``timer`` is given; untimed, nothing
    waits for the device, so the host prepares the next draw while the device computes."""
    if program == "phased":
        return run_phases(state, groups, config, warmup, timer=timer, bank=bank)
    if program != "fused":
        raise ValueError(f"program={program!r}; choose 'fused' or 'phased' (see iteration_program)")
    run = lambda: free_iteration(state, groups, config, warmup=warmup, bank=bank)
    return run() if timer is None else timer("iteration", run)
