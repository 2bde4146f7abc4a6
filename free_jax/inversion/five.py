"""FIVE: a meta-generator adapted to each teacher in k steps, and its meta-update (docs/algorithm.md §2.1).

The generator G_φ itself (module, parameters, persistent meta-optimiser) is ``inversion.generator``.

Per teacher t (``_adapt_one``), with φ_t ← φ, z_t ~ N(0, I) (B, nz), y = [0..N-1] repeated P
times, and a fresh augmentation draw at every step:

  for i in 0..k-1:  (φ_t, z_t) ← Adam step on  L_inv(φ_t, z_t)
  L_inv = CE(f_t(v_t(G_φt(z_t))), y) + λ_adv · L_adv + λ_bn · L_bn

with v_t the teacher's view (per-sample crop/flip, then resize, its normalisation; see ``augment``).
Then one more evaluation at the adapted (φ_t, z_t) gives the recovered images x_t = G_φt(z_t)
in [0, 1], the metrics, and (FOMAML) the meta-gradient ∇_φt L_inv(φ_t, z_t).

Meta-update (``meta_update_generator``), a *persistent* Adam (lr 1e-3, betas (0.5, 0.999)):
  FOMAML:  g_φ = Σ_t ∇_φt L_inv(φ_t, z_t)   (first-order: the Jacobian dφ_t/dφ is taken as I)
  Reptile: g_φ = Σ_t (φ − φ_t)
  φ ← φ − Adam(g_φ).

Inner loop form: the k steps run as a ``lax.scan`` (``InversionConfig.scan_steps=True``, the
default; ``False`` unrolls them), and on the CPU the teachers are mapped with ``lax.map``
(``InversionConfig.teacher_strategy``): one compiled step instead of T·k copies (BENCHMARKS.md,
"FIVE's inner loop").
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from free_jax import augment, losses, models
from free_jax.inversion.config import InversionConfig
from free_jax.inversion.generator import generate, meta_update_generator
from free_jax.models.conv import kernel_gradient
from free_jax.models.learner import MetaLearner
from free_jax.sharding import masked_sum, split_over_tasks
from free_jax.vectorize import map_leading
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.slots import TeacherSlots, as_groups, map_slots


# --------------------------------------------------------------------------- results
@struct.dataclass
class AdaptResult:
    """FIVE on one group of T teachers.

    Attributes:
      adapted_params: φ_t, every leaf (T, ...). images: (T, B, s, s, C) in [0, 1].
      confidence: (T, B) teacher probability of each image's target class (clean images).
      meta_grad: the group's summed meta-gradient (pytree like φ).
      metrics: scalars averaged over the T teachers, at the adapted (φ_t, z_t): loss, ce, adv,
        bn, teacher_acc (clean recovered images), teacher_acc_aug (augmented view).
    """

    adapted_params: Any
    images: jnp.ndarray
    confidence: jnp.ndarray
    meta_grad: Any
    metrics: dict


@struct.dataclass
class InversionResult:
    """FIVE on all sampled teacher groups (the output of ``invert``).

    Attributes:
      images: (Σ_g T_g·B, s, s, C) float32 in [0, 1], teachers in group order.
      labels: (Σ_g T_g·B,) int32 global class ids.
      per_group_images: list of (T_g, B, s, s, C). per_group_labels: list of (T_g, B) global ids.
      per_group_confidence: list of (T_g, B) teacher probability of the target.
      targets: (B,) the relative targets every teacher was inverted for.
      meta_grad: Σ over all teachers (FOMAML or Reptile, see ``meta_update_generator``).
      metrics: scalars averaged over all teachers.
    """

    images: jnp.ndarray
    labels: jnp.ndarray
    per_group_images: list
    per_group_labels: list
    per_group_confidence: list
    targets: jnp.ndarray
    meta_grad: Any
    metrics: dict


def relative_targets(config: InversionConfig) -> jnp.ndarray:
    """y = [0, 1, .., N-1] repeated P times, shape (B,)."""
    return jnp.tile(jnp.arange(config.way, dtype=jnp.int32), config.images_per_class)


# --------------------------------------------------------------------------- one teacher
def inversion_loss(gen_params, z, key, teacher_variables, teacher_mean, teacher_std, targets, *,
                   module, image_shape, config: InversionConfig, meta_learner: MetaLearner | None,
                   adversarial_on: jax.Array | None = None):
    """L_inv(φ, z) for one teacher (formula in the module docstring) and its parts.

    ``meta_learner=None`` drops the adversarial term (warm-up). ``adversarial_on``, a traced bool,
    switches it at run time instead (``lax.cond``: off, L_adv = 0 and the meta-learner is not
    run), so one program serves the warm-up and the later iterations. The teacher runs with running
    BN statistics; the meta-learner with batch statistics, its parameters under stop_gradient.
    Both see one view, the crop/flip drawn at the generator's resolution: the meta-learner
    takes it as is, the teacher resized and normalised (``augment.teacher_input``).

    Returns:
      (loss, (parts, images01)) with parts = {loss, ce, adv, bn, teacher_acc_aug}.
    """
    images = generate(gen_params, z, config)
    views = augment.random_crop_flip(key, images, config.crop_padding, config.flip)  # (B, s, s, C)
    view = augment.teacher_input(views, image_shape, teacher_mean, teacher_std)
    variables = teacher_variables
    if config.lambda_bn:
        logits, bn_stats = models.apply_with_bn_inputs(module, variables, view, "running")
        bn = losses.bn_statistics_loss(bn_stats)
    else:
        logits, bn = models.apply(module, variables, view, "running"), jnp.zeros(())
    ce = losses.cross_entropy(logits, targets)
    loss = ce + config.lambda_bn * bn
    adv = jnp.zeros(())
    if meta_learner is not None:
        def adversarial(logits):
            student_params = jax.lax.stop_gradient(meta_learner.params)
            student_logits = meta_learner.logits_fn()(student_params, views)
            if not config.adv_through_meta_learner:
                student_logits = jax.lax.stop_gradient(student_logits)
            return losses.adversarial_loss(logits, student_logits)

        if adversarial_on is None:
            adv = adversarial(logits)
        else:
            adv = jax.lax.cond(adversarial_on, adversarial, lambda logits: jnp.zeros((), logits.dtype), logits)
        loss = loss + config.lambda_adv * adv
    parts = {"loss": loss, "ce": ce, "adv": adv, "bn": bn,
             "teacher_acc_aug": losses.accuracy(logits, targets)}
    return loss, (parts, images)


def _inner_optimizers(config: InversionConfig, lr: float | None = None):
    b1, b2 = config.betas
    return (optax.adam(lr if lr is not None else config.gen_lr, b1=b1, b2=b2),
            optax.adam(config.z_lr, b1=b1, b2=b2))


@struct.dataclass
class GeneratorInversionState:
    """One teacher's inversion in progress: (φ, z) and their inner Adam states."""

    gen_params: Any
    z: jnp.ndarray
    gen_opt_state: Any
    z_opt_state: Any


def init_generator_inversion(gen_params, z: jnp.ndarray, config: InversionConfig,
                             lr: float | None = None) -> GeneratorInversionState:
    """Starts an inversion from generator ``gen_params`` (fresh or meta-learned) and codes z (B, nz).

    ``lr`` is the generator's inner learning rate (default ``config.gen_lr``); z uses ``config.z_lr``.
    """
    gen_opt, z_opt = _inner_optimizers(config, lr)
    return GeneratorInversionState(gen_params, z, gen_opt.init(gen_params), z_opt.init(z))


def inner_step(state: GeneratorInversionState, loss_fn, config: InversionConfig,
               lr: float | None = None) -> tuple[GeneratorInversionState, dict]:
    """One inner Adam step on (φ, z): the step FIVE's adaptation and the fresh-generator baseline share.

    Args:
      state: (φ, z) and their Adam states (``init_generator_inversion`` with the same ``lr``).
      loss_fn: ``(φ, z) -> (loss, (parts, images))``, e.g. ``inversion_loss`` at one augmentation key.
      lr: the generator's learning rate (default ``config.gen_lr``).

    Returns:
      (new state, parts) with the loss parts at the state *before* the step.
    """
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
    (_, (parts, _)), (grad_phi, grad_z) = grad_fn(state.gen_params, state.z)
    gen_opt, z_opt = _inner_optimizers(config, lr)
    updates, gen_opt_state = gen_opt.update(grad_phi, state.gen_opt_state, state.gen_params)
    z_updates, z_opt_state = z_opt.update(grad_z, state.z_opt_state, state.z)
    return GeneratorInversionState(optax.apply_updates(state.gen_params, updates),
                                   optax.apply_updates(state.z, z_updates),
                                   gen_opt_state, z_opt_state), parts


def _adapt_one(gen_params, teacher_variables, teacher_mean, teacher_std, z, key, *, targets,
               module, image_shape, config: InversionConfig, meta_learner, k: int, adversarial_on=None):
    """k Adam steps on (φ_t, z_t) for one teacher, then the final evaluation (module docstring)."""
    loss_fn = lambda phi, codes, step_key: inversion_loss(
        phi, codes, step_key, teacher_variables, teacher_mean, teacher_std, targets,
        module=module, image_shape=image_shape, config=config, meta_learner=meta_learner,
        adversarial_on=adversarial_on)

    def step(state, index):
        step_key = jax.random.fold_in(key, index)
        return inner_step(state, lambda phi, codes: loss_fn(phi, codes, step_key), config)[0], None

    state = init_generator_inversion(gen_params, z, config)
    if config.scan_steps:
        state, _ = jax.lax.scan(step, state, jnp.arange(k))
    else:
        for index in range(k):
            state, _ = step(state, index)
    phi, codes = state.gen_params, state.z

    final_key = jax.random.fold_in(key, k)
    if config.meta_update == "fomaml":
        (_, (parts, images)), meta_grad = jax.value_and_grad(loss_fn, has_aux=True)(phi, codes, final_key)
    else:
        _, (parts, images) = loss_fn(phi, codes, final_key)
        meta_grad = jax.tree_util.tree_map(jnp.subtract, gen_params, phi)
    images = jax.lax.stop_gradient(images)
    clean = (augment.resize_to(images, image_shape) - teacher_mean) / teacher_std
    probs = jax.nn.softmax(models.apply(module, teacher_variables, clean, "running"))
    confidence = jnp.take_along_axis(probs, targets[:, None], axis=-1)[:, 0]
    parts = {**parts, "teacher_acc": jnp.mean((jnp.argmax(probs, -1) == targets).astype(jnp.float32))}
    return phi, images, confidence, meta_grad, parts


# --------------------------------------------------------------------------- groups
def adapt_generator(gen_params, group: TeacherGroup, z: jnp.ndarray, targets: jnp.ndarray,
                    key: jax.Array, config: InversionConfig,
                    meta_learner: MetaLearner | None = None, k: int | None = None,
                    adversarial_on: jax.Array | None = None) -> AdaptResult:
    """FIVE on the T teachers of one group, vectorised with ``config.strategy``, split over the
    devices of ``config.mesh`` if any (``free_jax.sharding.split_over_tasks``; the meta-gradient
    is summed per device, then over devices).

    Args:
      gen_params: the meta-generator φ (shared starting point of every teacher).
      group: T teachers of one architecture/input shape.
      z: (T, B, nz) initial latent codes. targets: (B,) relative labels.
      key: one key for the group; teacher t uses ``split(key, T)[t]``.
      meta_learner: for the adversarial term; None = no adversarial term (warm-up).
      k: adaptation steps (default ``config.k``).
      adversarial_on: None, or a traced bool that switches the adversarial term (``inversion_loss``).

    Returns:
      ``AdaptResult``; ``meta_grad`` is summed over the group's teachers.
    """
    k = config.k if k is None else k
    keys = jax.random.split(key, group.size)

    def body(stacked, mask, shared):
        """This device's teachers (all of them on one device); the meta-gradient summed over them."""
        gen_params, targets, meta_learner, adversarial_on = shared
        fn = lambda variables, mean, std, codes, teacher_key: _adapt_one(
            gen_params, variables, mean, std, codes, teacher_key, targets=targets,
            module=group.module, image_shape=tuple(group.image_shape), config=config,
            meta_learner=meta_learner, k=k, adversarial_on=adversarial_on)
        phi, images, confidence, meta_grads, parts = map_leading(fn, *stacked, strategy=config.teacher_strategy(),
                                                                 in_flight=config.teachers_in_flight)
        return (phi, images, confidence, parts), masked_sum(meta_grads, mask)

    with kernel_gradient(config.kernel_gradient_form()):
        (phi, images, confidence, parts), meta_grad = split_over_tasks(
            body, (group.variables, group.mean, group.std, z, keys), config.mesh,
            (gen_params, targets, meta_learner, adversarial_on))
    metrics = {name: jnp.mean(value) for name, value in parts.items()}
    return AdaptResult(adapted_params=phi, images=images, confidence=confidence,
                       meta_grad=meta_grad, metrics=metrics)


def invert(gen_params, teachers: Sequence[TeacherGroup] | TeacherSlots, meta_learner: MetaLearner | None,
           key: jax.Array, config: InversionConfig, warmup: bool) -> InversionResult:
    """FIVE for all sampled teachers (several architectures/input shapes as groups), in one trace.

    Call inside the jitted training step (``config`` static). Group g uses
    ``fold_in(key, g)``, split into latent codes z ~ N(0, I) (T_g, B, nz) and augmentation keys.
    Slots over several groups (``zoo.slots``) use ``fold_in(key, 0)`` for all T slots, so one
    group's draw gets the same numbers as slots or as a group.

    Args:
      gen_params: φ. teachers: teacher groups, or ``TeacherSlots``; each teacher's images are made
        at the generator's resolution and resized to its own input size.
      meta_learner: s_θ for the adversarial term; may be None only when ``warmup`` or
        ``lambda_adv == 0``.
      warmup: True = no adversarial term (docs/algorithm.md §2.1: the first W iterations; the caller
        stores nothing). A Python bool picks the program's form at trace time; a traced bool
        switches the term at run time (``inversion_loss``), so the warm-up and the later iterations
        share one compiled program (the training step's ``recover_phase``); ``meta_learner`` is
        then needed whenever ``lambda_adv != 0``.

    Returns:
      ``InversionResult`` (images, global labels, per-group images, summed meta-gradient, metrics);
      slots over several groups come back as one "group" of all T slots.
    """
    switched = not isinstance(warmup, (bool, np.bool_))              # a traced bool: decided at run time
    use_adv = config.lambda_adv != 0 and (switched or not warmup)
    if use_adv and meta_learner is None:
        raise ValueError("the adversarial term needs a meta_learner (or warmup=True / lambda_adv=0)")
    meta_learner = meta_learner if use_adv else None
    adversarial_on = jnp.logical_not(warmup) if use_adv and switched else None
    groups = as_groups(teachers)
    if groups is None:
        return _invert_slots(gen_params, teachers, meta_learner, key, config, adversarial_on)
    if not groups:
        raise ValueError("invert needs at least one teacher group")
    targets = relative_targets(config)
    code_dtype = jax.tree_util.tree_leaves(gen_params)[0].dtype  # float32; float64 in exactness tests
    results, labels = [], []
    for index, group in enumerate(groups):
        if group.num_classes != config.way:
            raise ValueError(f"group {index} ({group.arch}) has {group.num_classes}-way teachers, "
                             f"config.way is {config.way}")
        z_key, aug_key = jax.random.split(jax.random.fold_in(key, index))
        z = jax.random.normal(z_key, (group.size, config.batch_size, config.nz), code_dtype)
        results.append(adapt_generator(gen_params, group, z, targets, aug_key, config, meta_learner,
                                       adversarial_on=adversarial_on))
        labels.append(jnp.asarray(group.class_ids)[:, targets].astype(jnp.int32))        # (T, B)
    meta_grad = jax.tree_util.tree_map(lambda *leaves: sum(leaves), *[r.meta_grad for r in results])
    total = sum(group.size for group in groups)
    metrics = {name: sum(r.metrics[name] * group.size for r, group in zip(results, groups)) / total
               for name in results[0].metrics}
    per_group_images = [r.images for r in results]
    images = jnp.concatenate([imgs.reshape(-1, *imgs.shape[2:]) for imgs in per_group_images])
    return InversionResult(
        images=images, labels=jnp.concatenate([lab.reshape(-1) for lab in labels]),
        per_group_images=per_group_images, per_group_labels=labels,
        per_group_confidence=[r.confidence for r in results], targets=targets,
        meta_grad=meta_grad, metrics=metrics)


def _invert_slots(gen_params, slots: TeacherSlots, meta_learner: MetaLearner | None, key: jax.Array,
                  config: InversionConfig, adversarial_on: jax.Array | None = None) -> InversionResult:
    """``invert`` over the T slots of several groups: one program whatever groups a draw mixes.

    Slot t adapts φ to ``stacks[group_of[t]]``'s teacher ``local_of[t]`` (``zoo.map_slots``:
    a switch to that group's branch), split over the devices of ``config.mesh`` like a group.
    """
    for index, stack in enumerate(slots.stacks):
        if stack.num_classes != config.way:
            raise ValueError(f"group {index} ({stack.arch}) has {stack.num_classes}-way teachers, "
                             f"config.way is {config.way}")
    targets = relative_targets(config)
    code_dtype = jax.tree_util.tree_leaves(gen_params)[0].dtype
    z_key, aug_key = jax.random.split(jax.random.fold_in(key, 0))
    z = jax.random.normal(z_key, (slots.size, config.batch_size, config.nz), code_dtype)

    def body(local_slots, mask, shared):
        gen_params, targets, meta_learner, adversarial_on, stacks = shared

        def branch_of(stack: TeacherGroup):
            def branch(local, codes, teacher_key):
                variables, class_ids, mean, std = stack.unstacked(local)
                _, images, confidence, meta_grad, parts = _adapt_one(
                    gen_params, variables, mean, std, codes, teacher_key, targets=targets, module=stack.module,
                    image_shape=tuple(stack.image_shape), config=config, meta_learner=meta_learner, k=config.k,
                    adversarial_on=adversarial_on)
                return images, confidence, class_ids[targets], meta_grad, parts
            return branch

        group_of, local_of, codes, keys = local_slots
        images, confidence, labels, meta_grads, parts = map_slots(branch_of, stacks, group_of, local_of,
                                                                  (codes, keys), config.teacher_strategy(),
                                                                  in_flight=config.teachers_in_flight)
        return (images, confidence, labels, parts), masked_sum(meta_grads, mask)

    with kernel_gradient(config.kernel_gradient_form()):
        (images, confidence, labels, parts), meta_grad = split_over_tasks(
            body, (slots.group_of, slots.local_of, z, jax.random.split(aug_key, slots.size)), config.mesh,
            (gen_params, targets, meta_learner, adversarial_on, slots.stacks))
    labels = labels.astype(jnp.int32)
    return InversionResult(
        images=images.reshape(-1, *images.shape[2:]), labels=labels.reshape(-1), per_group_images=[images],
        per_group_labels=[labels], per_group_confidence=[confidence], targets=targets, meta_grad=meta_grad,
        metrics={name: jnp.mean(value) for name, value in parts.items()})


def invert_and_meta_update(gen_params, gen_opt_state, teachers: Sequence[TeacherGroup] | TeacherSlots,
                           key: jax.Array, config: InversionConfig, warmup: bool,
                           meta_learner: MetaLearner | None = None):
    """One FIVE iteration: ``invert`` the sampled teachers, then one meta-update of φ with their
    summed meta-gradient (``meta_update_generator``). Call inside jit (``config`` static; ``warmup``
    a Python bool or a traced one, see ``invert``).

    Returns:
      (gen_params, gen_opt_state, InversionResult).
    """
    result = invert(gen_params, teachers, meta_learner, key, config, warmup)
    gen_params, gen_opt_state = meta_update_generator(gen_params, gen_opt_state, result.meta_grad, config)
    return gen_params, gen_opt_state, result
