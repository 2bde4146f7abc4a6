"""The recovery-speed figure's data: FIVE's trained meta-generator vs a fresh generator on zoo teachers.

The meta-generator is the one a finished ``free`` row ended training with (its newest training
state); the teachers are the first few of the comparison's zoo (teachers FREE recovered from
during training: this measures recovery as FREE performs it, not generalisation to unseen
teachers, which ``free_jax.benchmarks.inversion`` measures). Both generators are adapted by the
same jitted single-step program, ``benchmarks.inversion.recovery_curves``.
"""
from __future__ import annotations

from pathlib import Path

import jax

from free_jax import checkpointing
from free_jax.benchmarks.inversion import recovery_curves
from free_jax.comparison.rows import Row, row_config
from free_jax.inversion import init_generator
from free_jax.training.config import step_config
from free_jax.training.run_setup import meta_learner_input, state_constructor
from free_jax.zoo.store import Zoo


def trained_generator(config, workdir: Path, zoo: Zoo):
    """The meta-generator parameters of the newest training state in ``workdir``."""
    image_shape, mean, std = meta_learner_input(config, zoo.specs)
    abstract = jax.eval_shape(state_constructor(config, zoo, image_shape, mean, std, step_config(config)))
    checkpoints = checkpointing.TrainingCheckpoints(workdir / "checkpoints", config.keep_checkpoints)
    try:
        state, _ = checkpoints.restore(abstract)
    finally:
        checkpoints.close()
    return state.gen_params, image_shape


def measure(base, row: Row, output: Path, zoo: Zoo, *, teachers: int, draws: int, fresh_steps: int) -> dict | None:
    """Per-teacher recovery curves of ``row`` (a finished free row); None if no zoo group has the
    generator's image shape (multi-domain zoos at other sizes: not covered here)."""
    config = row_config(base, row, output / "zoo")
    gen_params, image_shape = trained_generator(config, output / "rows" / row.name, zoo)
    inversion = step_config(config).inversion
    group = next((g for g in zoo.groups() if tuple(g.image_shape) == tuple(image_shape)), None)
    if group is None:
        return None
    fresh_params, _ = init_generator(jax.random.key(config.seed + 1), inversion, image_shape)
    per_teacher = []
    for index in range(min(teachers, group.size)):
        curves = recovery_curves(gen_params, fresh_params, group, index, inversion, draws=draws,
                                 fresh_steps=fresh_steps)
        per_teacher.append({"teacher": index, "meta": curves.meta.tolist(), "fresh": curves.fresh.tolist(),
                            "step_seconds": curves.step_seconds, "meta_wall_s": curves.meta_wall,
                            "fresh_wall_s": curves.fresh_wall})
    return {"row": row.name, "draws": draws, "fresh_steps": fresh_steps, "k": inversion.k,
            "teachers": per_teacher}
