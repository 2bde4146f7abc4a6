"""Recovery: one interface over the ways of recovering images from a teacher (docs/algorithm.md §2.1, §5).

The training step fills the memory bank from whatever recovery the run's method names; every
recovery is a pure, jit-able function with the same signature

    recover(gen_params, gen_opt_state, groups, key, config, warmup, meta_learner, image_shape)
        -> (gen_params, gen_opt_state, Recovered)

* ``five``: FREE's meta-generator, k adaptation steps per teacher from the shared φ, then the
  meta-update of φ (``five.invert_and_meta_update``);
* ``fresh_generator``: a freshly initialised generator per teacher trained ``fresh_steps`` steps
  (BiDf-MKD / TGR; ``baselines.invert_fresh_generator``); φ is left as it is;
* ``pixel``: PURER-style pixel inversion, the images themselves optimised ``pixel_steps`` steps
  (``baselines.invert_pixels``); φ is left as it is.

The images of every recovery come out at ``image_shape`` (the meta-learner's and the bank's
resolution, in [0, 1]) with the teachers' global class ids, so the bank, BELL's alignment and
the replay downstream are the same for all of them. Only FIVE learns across teachers, so only
FIVE has a warm-up (``Recovery.meta_generator``); the baselines recover from scratch for every
teacher and have no adversarial term (as the methods they reproduce).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from free_jax import augment
from free_jax.inversion import baselines
from free_jax.inversion.config import InversionConfig
from free_jax.inversion.five import invert_and_meta_update, relative_targets
from free_jax.models.learner import MetaLearner
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.slots import TeacherSlots, as_groups, map_slots


@struct.dataclass
class Recovered:
    """The images one recovery made for the sampled teachers.

    Attributes:
      images: (Σ_g T_g·B, s, s, C) float32 in [0, 1], teachers in group order.
      labels: (Σ_g T_g·B,) int32 global class ids.
      per_group_images: list of (T_g, B, s, s, C), the same images per group (for alignment).
      per_group_labels: list of (T_g, B) global class ids, the same labels per group.
      metrics: scalars averaged over all teachers; ``teacher_acc`` (the teacher's accuracy on the
        clean recovered images) for every recovery.
      per_group_confidence: FIVE: list of (T_g, B), each teacher's probability of the target class
        of its clean recovered images (the recovered-image grid's captions); None otherwise.
    """

    images: jnp.ndarray
    labels: jnp.ndarray
    per_group_images: list
    per_group_labels: list
    metrics: dict
    per_group_confidence: list | None = None


@dataclasses.dataclass(frozen=True)
class Recovery:
    """A recovery: its name, its function (module docstring) and whether it meta-learns a
    generator across teachers (then it has a warm-up; otherwise warm-up iterations are idle)."""

    name: str
    recover: Callable
    meta_generator: bool


def _five(gen_params, gen_opt_state, groups, key, config, warmup, meta_learner, image_shape):
    del image_shape                                     # the meta-generator's own resolution
    gen_params, gen_opt_state, result = invert_and_meta_update(gen_params, gen_opt_state, groups, key, config,
                                                               warmup, meta_learner)
    return gen_params, gen_opt_state, Recovered(result.images, result.labels, result.per_group_images,
                                                result.per_group_labels, result.metrics,
                                                result.per_group_confidence)


def _per_teacher(per_teacher: Callable[[TeacherGroup], Callable], teachers, key, image_shape,
                 config: InversionConfig) -> Recovered:
    """Runs a baseline on every drawn teacher, images resized to ``image_shape``.

    ``per_teacher(group)`` is the baseline for one teacher of ``group`` (``baselines.*_per_teacher``).
    Groups: group g's teachers with ``fold_in(key, g)`` (``baselines.each_teacher``); slots over
    several groups: slot t with ``split(fold_in(key, 0), T)[t]`` (``zoo.map_slots``), the keys a
    draw from one group gets either way.
    """
    groups = as_groups(teachers)
    if groups is None:
        return _per_slot(per_teacher, teachers, key, image_shape, config)
    if not groups:
        raise ValueError("recovery needs at least one teacher group")
    per_group, labels, accuracy = [], [], []
    for index, group in enumerate(groups):
        result = baselines.each_teacher(jax.random.fold_in(key, index), group, config, per_teacher(group))
        count, batch = result.images.shape[:2]
        flat = augment.resize_to(result.images.reshape(count * batch, *result.images.shape[2:]), image_shape)
        per_group.append(flat.reshape(count, batch, *flat.shape[1:]))                     # (T, B, s, s, C)
        labels.append(result.labels.reshape(count, batch).astype(jnp.int32))                 # (T, B)
        accuracy.append(result.accuracy_history[:, -1])                                       # (T,)
    images = jnp.concatenate([imgs.reshape(-1, *imgs.shape[2:]) for imgs in per_group])
    return Recovered(images, jnp.concatenate([lab.reshape(-1) for lab in labels]), per_group, labels,
                     {"teacher_acc": jnp.mean(jnp.concatenate(accuracy))})


def _per_slot(per_teacher, slots: TeacherSlots, key, image_shape, config: InversionConfig) -> Recovered:
    """``_per_teacher`` over the slots of several groups: one program whatever groups a draw mixes."""
    targets = relative_targets(config)

    def branch_of(stack: TeacherGroup):
        one = per_teacher(stack)

        def branch(local, teacher_key):
            variables, class_ids, mean, std = stack.unstacked(local)
            images, history, _ = one(variables, mean, std, teacher_key)
            return augment.resize_to(images, image_shape), history[-1], class_ids[targets]
        return branch

    keys = jax.random.split(jax.random.fold_in(key, 0), slots.size)
    images, accuracy, labels = map_slots(branch_of, slots.stacks, slots.group_of, slots.local_of, (keys,),
                                         config.strategy)
    labels = labels.astype(jnp.int32)
    return Recovered(images.reshape(-1, *images.shape[2:]), labels.reshape(-1), [images], [labels],
                     {"teacher_acc": jnp.mean(accuracy)})


def _fresh_generator(gen_params, gen_opt_state, groups, key, config, warmup, meta_learner, image_shape):
    del warmup, meta_learner                             # no warm-up, no adversarial term
    recovered = _per_teacher(lambda group: baselines.fresh_generator_per_teacher(group, config,
                                                                                 image_shape=image_shape),
                             groups, key, image_shape, config)
    return gen_params, gen_opt_state, recovered


def _pixel(gen_params, gen_opt_state, groups, key, config, warmup, meta_learner, image_shape):
    del warmup, meta_learner
    recovered = _per_teacher(lambda group: baselines.pixels_per_teacher(group, config), groups, key, image_shape,
                             config)
    return gen_params, gen_opt_state, recovered


RECOVERIES = {recovery.name: recovery for recovery in (
    Recovery("five", _five, meta_generator=True),
    Recovery("fresh_generator", _fresh_generator, meta_generator=False),
    Recovery("pixel", _pixel, meta_generator=False),
)}


def recover(name: str, gen_params, gen_opt_state, groups: Sequence[TeacherGroup] | TeacherSlots, key: jax.Array,
            config: InversionConfig, warmup: bool, meta_learner: MetaLearner | None, image_shape):
    """Recovery ``name`` (a key of ``RECOVERIES``) for the sampled teacher ``groups``; call inside jit.

    Args:
      gen_params, gen_opt_state: the meta-generator φ and its persistent Adam (only FIVE updates them).
      key: the iteration's recovery key. warmup: FIVE's warm-up (no adversarial term), a Python bool or a
        traced one (``five.invert``).
      meta_learner: s_θ for FIVE's adversarial term (None: no adversarial term).
      image_shape: (s, s, C) of the recovered images (the bank's).

    Returns:
      (gen_params, gen_opt_state, ``Recovered``).
    """
    if name not in RECOVERIES:
        raise ValueError(f"unknown recovery {name!r}; choose one of {tuple(RECOVERIES)}")
    return RECOVERIES[name].recover(gen_params, gen_opt_state, groups, key, config, warmup, meta_learner,
                                    tuple(int(d) for d in image_shape))
