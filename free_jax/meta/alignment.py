"""BELL, part 1: implicit gradient alignment with cross-teacher distillation (docs/algorithm.md §2.3).

Distillation loss of the meta-learner s_θ on teacher t's recovered images x_t (both models see
the same augmented images, each with its own input normalisation/size):

    L_kd(θ; x_t, f_t) = τ² · (1/B) Σ_b KL( softmax(f_t(x_b)/τ) ‖ softmax(s_θ(x_b)/τ) )

Alignment step: θ̃_0 = θ, then for the T sampled teachers in a random order π,
θ̃_{i+1} = θ̃_i − OptStep(∇ L_kd(θ̃_i; x_{π(i)}, f_{π(i)})), and the gradient handed to θ's
persistent optimiser is g_align = β_align · (θ − θ̃_T).

Why it aligns gradients (Reptile/Fish): with plain SGD of step α over tasks i = 1..n,

    θ − θ̃_n = α Σ_i g_i − α² Σ_{i<j} H_j g_i + O(α³),

g_i = ∇L_i(θ), H_j = ∇²L_j(θ). Averaged over random orders, E[Σ_{i<j} H_j g_i] = ½ Σ_{i<j}
(H_j g_i + H_i g_j) = ½ ∇ Σ_{i<j} g_iᵀ g_j, so descending along θ − θ̃ descends
Σ_i L_i − (α/2) Σ_{i<j} g_iᵀ g_j: it lowers the summed loss *and raises the inner products of
the teachers' gradients*, reducing conflicts between heterogeneous teachers without Hessians.
The expansion holds for small α: tests/test_alignment.py checks the raised inner products at
α = 0.01 (mean over all orders); at α ≥ 0.03 higher-order terms can dominate on small random
problems. The steps are sequential by design (order matters): an unrolled loop, never a vmap.
Each iteration starts a fresh inner optimiser state for θ̃ (the released code makes a new one).
Being straight-line code, the student's convolutions take JAX's own kernel-gradient rule on the
CPU (``kernel_gradient="convolution"``): the same sums as the loop-friendly "windows" form, about 20 %
faster for the free suite's alignment (BENCHMARKS.md, "Alignment's kernel gradient").
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from free_jax import augment, models
from free_jax.losses import kl_divergence
from free_jax.models.conv import kernel_gradient as conv_kernel_gradient
from free_jax.models.learner import MetaLearner
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.slots import TeacherSlots, as_groups

ALIGN_OPTIMIZERS = ("adam", "sgd")


def distillation_loss(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray, tau: float = 1.0) -> jnp.ndarray:
    """τ² · mean_b KL(softmax(teacher/τ) ‖ softmax(student/τ)); the teacher side is a constant."""
    teacher_logits = jax.lax.stop_gradient(teacher_logits)
    return tau ** 2 * jnp.mean(kl_divergence(teacher_logits / tau, student_logits / tau))


def teacher_order(key: jax.Array, groups: Sequence[TeacherGroup]):
    """A random visiting order over all sampled teachers, as (group index, index in group) arrays."""
    group_of = jnp.asarray([g for g, group in enumerate(groups) for _ in range(group.size)], jnp.int32)
    local_of = jnp.asarray([i for group in groups for i in range(group.size)], jnp.int32)
    permutation = jax.random.permutation(key, group_of.shape[0])
    return group_of[permutation], local_of[permutation]


def _visits(key: jax.Array, teachers, per_group_images):
    """The alignment's visiting order and each visit's teacher and images.

    Returns (stacks, images per stack, group index, teacher index in its stack, image index in
    that stack's images) with the three index arrays in visiting order: a random permutation of
    the T sampled teachers (slots in the order ``teacher_order`` lists a group's teachers).
    """
    groups = as_groups(teachers)
    if groups is not None:
        group_index, local_index = teacher_order(key, groups)
        return groups, list(per_group_images), group_index, local_index, local_index
    permutation = jax.random.permutation(key, teachers.size)          # slots: all images in one array
    images = per_group_images[0]
    return (teachers.stacks, [images] * len(teachers.stacks), teachers.group_of[permutation],
            teachers.local_of[permutation], permutation)


def _distill_branch(group: TeacherGroup, images: jnp.ndarray, meta_learner: MetaLearner, tau: float,
                    padding: int, flip: bool):
    """f(params, teacher index, image index, key) -> (loss, grads) of L_kd for that teacher of
    ``group`` on ``images[image index]``."""
    logits_fn = meta_learner.logits_fn()

    def branch(params, local, row, key):
        teacher_vars = jax.tree_util.tree_map(lambda leaf: leaf[local], group.variables)
        views = augment.random_crop_flip(key, images[row], padding, flip)          # (B, s, s, C)
        teacher_in = augment.teacher_input(views, group.image_shape, group.mean[local], group.std[local])
        teacher_logits = models.apply(group.module, teacher_vars, teacher_in, "running")
        return jax.value_and_grad(
            lambda p: distillation_loss(teacher_logits, logits_fn(p, views), tau))(params)

    return branch


def alignment_gradient(meta_learner: MetaLearner, teachers: Sequence[TeacherGroup] | TeacherSlots,
                       per_group_images: Sequence[jnp.ndarray], key: jax.Array, *, inner_lr: float = 1e-3,
                       beta_align: float = 67.0, tau: float = 1.0, crop_padding: int = 4, flip: bool = True,
                       inner_optimizer: str = "adam", kernel_gradient: str = "convolution"):
    """g_align = β_align · (θ − θ̃) after one inner optimiser step per teacher, in random order.

    Args:
      meta_learner: s_θ. teachers: the sampled teacher groups, or ``TeacherSlots``.
      per_group_images: (T_g, B, s, s, C) recovered images of each group's teachers, in [0, 1]
        (slots over several groups: one (T, B, s, s, C) array, the recovery's).
      key: decides the visiting order and the augmentation draws.
      inner_optimizer: "adam" (the released code's, default) or "sgd" (the setting of the
        expansion above).
      kernel_gradient: the convolutions' kernel-gradient form on the CPU
        (``free_jax.models.conv.kernel_gradient``); "convolution" since the steps are unrolled.
    Returns:
      (g_align pytree like θ, {"kd_loss": mean distillation loss over the T steps}).
    """
    order_key, aug_key = jax.random.split(key)
    stacks, images_of, group_index, local_index, row_index = _visits(order_key, teachers, per_group_images)
    branches = [_distill_branch(group, images, meta_learner, tau, crop_padding, flip)
                for group, images in zip(stacks, images_of)]
    if inner_optimizer not in ALIGN_OPTIMIZERS:
        raise ValueError(f"inner_optimizer must be one of {ALIGN_OPTIMIZERS}, got {inner_optimizer!r}")
    optimizer = optax.adam(inner_lr) if inner_optimizer == "adam" else optax.sgd(inner_lr)
    params = meta_learner.params
    opt_state = optimizer.init(params)
    losses = []
    with conv_kernel_gradient(kernel_gradient):
        for position in range(int(group_index.shape[0])):  # sequential by design
            step_key = jax.random.fold_in(aug_key, position)
            loss, grads = jax.lax.switch(group_index[position], branches, params, local_index[position],
                                         row_index[position], step_key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            losses.append(loss)
    gradient = jax.tree_util.tree_map(lambda before, after: beta_align * (before - after),
                                      meta_learner.params, params)
    return gradient, {"kd_loss": jnp.mean(jnp.stack(losses))}
