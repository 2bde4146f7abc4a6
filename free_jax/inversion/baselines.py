"""The baselines' inversions (docs/algorithm.md §5), on FIVE's loss and augmentation code.

* Fresh per-teacher generator (BiDf-MKD/TGR): a newly initialised generator and latent codes
  per teacher, trained ``steps`` (default 200) Adam steps on
  L(φ, z) = CE(f_t(v_t(G_φ(z))), y) + λ_bn · L_bn — the slow recovery FIVE replaces. The same
  single-step function (``generator_inversion_step``) adapts a meta-generator, so speed
  comparisons differ only in the starting point.
* PURER-style pixel inversion: the images themselves are the parameters, in the teacher's
  normalised space, x ~ N(0, I) at the start, Adam (``pixel_lr``) on
  L(x) = CE(f_t(aug(x)), y) + λ_tv · TV(x) + λ_bn · L_bn + λ_l2 · mean(x²),
  each step followed by clipping x to the normalised image of [0, 1] (DeepInversion).

Both run the teachers of one group through ``free_jax.vectorize.map_leading`` and a
``lax.scan`` over steps (hundreds of steps: unrolling would make huge programs), recording the
teacher's accuracy on the clean images at every step. ``fresh_generator_per_teacher`` and
``pixels_per_teacher`` are the same recoveries for one teacher (the recovery over
``zoo.TeacherSlots`` maps them over slots of several groups).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from free_jax import augment, losses, models
from free_jax.inversion.config import InversionConfig
from free_jax.inversion.five import (
    GeneratorInversionState,
    init_generator_inversion,
    inner_step,
    inversion_loss,
    relative_targets,
)
from free_jax.inversion.generator import generate, init_generator
from free_jax.models.learner import MetaLearner
from free_jax.vectorize import map_leading
from free_jax.zoo.group import TeacherGroup


@struct.dataclass
class BaselineResult:
    """Images recovered for the T teachers of one group by a baseline.

    Attributes:
      images: (T, B, H, W, C) in [0, 1]. labels: (T, B) global class ids.
      accuracy_history: (T, steps + 1): teacher accuracy on the clean images after 0..steps steps.
      final: the final per-teacher state (generator baseline) or (pixels, Adam state) (pixel baseline).
    """

    images: jnp.ndarray
    labels: jnp.ndarray
    accuracy_history: jnp.ndarray
    final: Any


def generator_inversion_step(state: GeneratorInversionState, key: jax.Array, teacher_variables,
                             teacher_mean, teacher_std, *, module, image_shape,
                             config: InversionConfig, meta_learner: MetaLearner | None = None,
                             lr: float | None = None):
    """One Adam step on (φ, z) for L_inv (see ``five.inversion_loss``); FIVE's inner step (``five.inner_step``).

    Returns:
      (new state, parts) with the loss parts at the state *before* the step.
    """
    targets = relative_targets(config)
    loss_fn = lambda phi, codes: inversion_loss(phi, codes, key, teacher_variables, teacher_mean, teacher_std,
                                                targets, module=module, image_shape=image_shape, config=config,
                                                meta_learner=meta_learner)
    return inner_step(state, loss_fn, config, lr)


def teacher_accuracy(images01, teacher_variables, teacher_mean, teacher_std, targets, *, module,
                     image_shape):
    """(accuracy, confidence (B,)) of one teacher on clean images in [0, 1] (running BN)."""
    view = (augment.resize_to(images01, image_shape) - teacher_mean) / teacher_std
    probs = jax.nn.softmax(models.apply(module, teacher_variables, view, "running"))
    correct = (jnp.argmax(probs, -1) == targets).astype(jnp.float32)
    return jnp.mean(correct), jnp.take_along_axis(probs, targets[:, None], -1)[:, 0]


def invert_fresh_generator(key: jax.Array, teacher: TeacherGroup, config: InversionConfig,
                           steps: int | None = None, image_shape=None,
                           lr: float | None = None) -> BaselineResult:
    """BiDf-MKD/TGR recovery: a fresh generator and z per teacher, ``steps`` Adam steps each.

    Loss CE + λ_bn·L_bn (no adversarial term), same augmentation as FIVE.

    Args:
      key: teacher t uses ``split(key, T)[t]`` (generator init, z, augmentation draws).
      teacher: a group of T ≥ 1 teachers. steps: default ``config.fresh_steps`` (200).
      image_shape: generator resolution (default the teachers' input shape).
      lr: generator learning rate (default ``config.fresh_lr``); z uses ``config.z_lr``.
    """
    return each_teacher(key, teacher, config, fresh_generator_per_teacher(teacher, config, steps, image_shape, lr))


def fresh_generator_per_teacher(teacher: TeacherGroup, config: InversionConfig, steps: int | None = None,
                                image_shape=None, lr: float | None = None):
    """``invert_fresh_generator`` for one teacher of ``teacher``'s group:
    ``fn(variables, mean, std, key) -> (images, accuracy history, final state)`` (``_optimiser``)."""
    steps = config.fresh_steps if steps is None else steps
    lr = config.fresh_lr if lr is None else lr
    image_shape = tuple(teacher.image_shape if image_shape is None else image_shape)
    group_shape = tuple(teacher.image_shape)

    def init(init_key, variables, mean, std):
        gen_key, z_key = jax.random.split(init_key)
        gen_params, _ = init_generator(gen_key, config, image_shape)
        z = jax.random.normal(z_key, (config.batch_size, config.nz), jnp.float32)
        return init_generator_inversion(gen_params, z, config, lr)

    def step(state, step_key, variables, mean, std):
        return generator_inversion_step(state, step_key, variables, mean, std, module=teacher.module,
                                        image_shape=group_shape, config=config, lr=lr)[0]

    return _optimiser(teacher, config, steps, init, step,
                      lambda state, mean, std: generate(state.gen_params, state.z, config))


def pixel_inversion_loss(pixels, key, teacher_variables, targets, *, module,
                         config: InversionConfig):
    """PURER/DeepInversion loss on normalised pixels x (B, H, W, C) (formula in module docstring).

    Returns:
      (loss, parts) with parts = {loss, ce, tv, bn, l2}.
    """
    view = augment.random_crop_flip(key, pixels, config.crop_padding, config.flip)
    logits, bn_stats = models.apply_with_bn_inputs(module, teacher_variables, view, "running")
    ce = losses.cross_entropy(logits, targets)
    tv, l2, bn = losses.total_variation(pixels), losses.l2_prior(pixels), losses.bn_statistics_loss(bn_stats)
    loss = ce + config.pixel_lambda_tv * tv + config.pixel_lambda_bn * bn + config.pixel_lambda_l2 * l2
    return loss, {"loss": loss, "ce": ce, "tv": tv, "bn": bn, "l2": l2}


def invert_pixels(key: jax.Array, teacher: TeacherGroup, config: InversionConfig,
                  steps: int | None = None) -> BaselineResult:
    """PURER-style pixel inversion for the T teachers of a group, ``steps`` Adam steps each.

    Images come out at each teacher's own input size, in [0, 1].
    """
    return each_teacher(key, teacher, config, pixels_per_teacher(teacher, config, steps))


def pixels_per_teacher(teacher: TeacherGroup, config: InversionConfig, steps: int | None = None):
    """``invert_pixels`` for one teacher of ``teacher``'s group:
    ``fn(variables, mean, std, key) -> (images, accuracy history, final state)`` (``_optimiser``)."""
    steps = config.pixel_steps if steps is None else steps
    targets = relative_targets(config)
    shape = tuple(teacher.image_shape)
    optimizer = optax.adam(config.pixel_lr, b1=config.betas[0], b2=config.betas[1])
    bounds = lambda mean, std: ((0.0 - mean) / std, (1.0 - mean) / std)

    def init(init_key, variables, mean, std):
        pixels = jnp.clip(jax.random.normal(init_key, (config.batch_size, *shape), jnp.float32), *bounds(mean, std))
        return pixels, optimizer.init(pixels)

    def step(state, step_key, variables, mean, std):
        pixels, opt_state = state
        grads = jax.grad(lambda x: pixel_inversion_loss(x, step_key, variables, targets, module=teacher.module,
                                                        config=config)[0])(pixels)
        updates, opt_state = optimizer.update(grads, opt_state, pixels)
        return jnp.clip(optax.apply_updates(pixels, updates), *bounds(mean, std)), opt_state

    return _optimiser(teacher, config, steps, init, step,
                      lambda state, mean, std: jnp.clip(state[0] * std + mean, 0.0, 1.0))


def _optimiser(teacher: TeacherGroup, config: InversionConfig, steps: int, init, step, images_of):
    """The baselines' shared per-teacher driver ``fn(variables, mean, std, teacher_key)`` for a
    teacher of ``teacher``'s group: ``state = init(init_key, variables, mean, std)``, then
    ``steps`` times ``state = step(state, fold_in(loop_key, i), variables, mean, std)``, recording
    the teacher's accuracy on ``images_of(state, mean, std)`` (clean, in [0, 1]) before every step
    and after the last. Returns (images, accuracy history (steps + 1,), final state)."""
    targets = relative_targets(config)
    shape = tuple(teacher.image_shape)

    def one(variables, mean, std, teacher_key):
        init_key, loop_key = jax.random.split(teacher_key)
        accuracy = lambda state: teacher_accuracy(images_of(state, mean, std), variables, mean, std, targets,
                                                  module=teacher.module, image_shape=shape)[0]

        def body(state, index):
            return step(state, jax.random.fold_in(loop_key, index), variables, mean, std), accuracy(state)

        state, history = jax.lax.scan(body, init(init_key, variables, mean, std), jnp.arange(steps))
        return images_of(state, mean, std), jnp.append(history, accuracy(state)), state

    return one


def each_teacher(key, teacher: TeacherGroup, config: InversionConfig, one) -> BaselineResult:
    """``one`` (``_optimiser``) for each teacher t of the group, key ``split(key, T)[t]`` (``map_leading``)."""
    images, history, final = map_leading(one, teacher.variables, teacher.mean, teacher.std,
                                         jax.random.split(key, teacher.size), strategy=config.strategy)
    return BaselineResult(images=images, labels=jnp.asarray(teacher.class_ids)[:, relative_targets(config)],
                          accuracy_history=history, final=final)
