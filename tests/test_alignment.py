"""BELL alignment: equals a hand-written sequential computation; raises gradient inner products."""
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import augment, models
from free_jax.meta import alignment
from free_jax.models.learner import create_meta_learner
from free_jax.normalization import normalize
from free_jax.zoo.group import TeacherGroup

SHAPE = (16, 16, 1)


def make_problem(seed, num_teachers=3, width=4, batch=10):
    module = models.build_backbone("conv4", 5, width)
    teacher_vars = [models.init_variables(module, jax.random.key(100 * seed + i), SHAPE) for i in range(num_teachers)]
    group = TeacherGroup(variables=jax.tree_util.tree_map(lambda *a: jnp.stack(a), *teacher_vars),
                         class_ids=jnp.arange(5 * num_teachers, dtype=jnp.int32).reshape(num_teachers, 5),
                         mean=jnp.full((num_teachers, 1), 0.4), std=jnp.full((num_teachers, 1), 0.3),
                         module=module, arch="conv4", image_shape=SHAPE)
    images = jax.random.uniform(jax.random.key(seed + 7), (num_teachers, batch, *SHAPE))
    learner = create_meta_learner(jax.random.key(seed + 3), "conv4", 5, SHAPE, [0.5], [0.25], width=width)
    return learner, group, images


def to_f64(tree):
    return jax.tree_util.tree_map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@pytest.mark.parametrize("form", ["convolution", "windows"])
def test_alignment_equals_hand_written_sequential_adam(form):
    # float64: Adam divides by √v, so near-zero gradient entries would amplify float32 noise.
    # The hand-written steps take the "windows" kernel gradient (the default outside alignment).
    with jax.enable_x64(True):
        _check_alignment_by_hand(form)


def _check_alignment_by_hand(form):
    learner, group, images = (to_f64(x) for x in make_problem(0))
    key = jax.random.key(11)
    lr, beta, tau = 1e-2, 3.0, 2.0
    gradient, metrics = jax.jit(lambda m, g, im, k: alignment.alignment_gradient(
        m, [g], [im], k, inner_lr=lr, beta_align=beta, tau=tau, crop_padding=2, flip=True,
        kernel_gradient=form))(learner, group, images, key)

    # By hand: the same order and augmentation draws, Adam written out, one teacher at a time (each
    # teacher's step one jitted program, compiled once: the eager op-by-op run compiled ~400 programs).
    order_key, aug_key = jax.random.split(key)
    _, local = alignment.teacher_order(order_key, [group])

    @jax.jit
    def adam_step(params, m, v, t, views, t_vars, t_mean, t_std):
        t_logits = models.apply(group.module, t_vars, normalize(views, t_mean, t_std), "running")

        def kd(p):
            s_logits = models.apply(learner.module, {**learner.variables, "params": p},
                                    normalize(views, learner.mean, learner.std), "batch")
            log_p = jax.nn.log_softmax(t_logits / tau)
            return tau ** 2 * jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - jax.nn.log_softmax(s_logits / tau)), -1))
        loss, grads = jax.value_and_grad(kd)(params)
        m = jax.tree_util.tree_map(lambda a, g: 0.9 * a + 0.1 * g, m, grads)
        v = jax.tree_util.tree_map(lambda a, g: 0.999 * a + 0.001 * g * g, v, grads)
        params = jax.tree_util.tree_map(
            lambda p, a, b: p - lr * (a / (1 - 0.9 ** t)) / (jnp.sqrt(b / (1 - 0.999 ** t)) + 1e-8), params, m, v)
        return params, m, v, loss

    params = learner.params
    m = v = jax.tree_util.tree_map(jnp.zeros_like, params)
    losses = []
    for position, teacher in enumerate(np.asarray(local)):
        views = augment.random_crop_flip(jax.random.fold_in(aug_key, position), images[teacher], 2, True)
        t_vars = jax.tree_util.tree_map(lambda leaf: leaf[teacher], group.variables)
        params, m, v, loss = adam_step(params, m, v, jnp.float64(position + 1), views, t_vars, group.mean[teacher],
                                       group.std[teacher])
        losses.append(loss)
    expected = jax.tree_util.tree_map(lambda before, after: beta * (before - after), learner.params, params)
    chex.assert_trees_all_close(gradient, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(metrics["kd_loss"], np.mean(losses), rtol=1e-4)


@jax.jit
def _teacher_gradients(learner, group, images, params):
    """Each teacher's distillation gradient at ``params``, flattened (one program for every call)."""
    grads = []
    for teacher in range(group.size):
        t_vars = jax.tree_util.tree_map(lambda leaf: leaf[teacher], group.variables)
        t_logits = models.apply(group.module, t_vars,
                                normalize(images[teacher], group.mean[teacher], group.std[teacher]), "running")
        loss = lambda p: alignment.distillation_loss(t_logits, learner.logits_fn()(p, images[teacher]))
        grads.append(jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(jax.grad(loss)(params))]))
    return grads


def _mean_pairwise_inner_product(grads):
    return float(np.mean([jnp.vdot(a, b) for a, b in itertools.combinations(grads, 2)]))


def _all_order_keys(group, count=6):
    """PRNG keys whose visiting orders cover every permutation of the group's teachers."""
    keys, seen = [], set()
    for candidate in range(500):
        _, local = alignment.teacher_order(jax.random.split(jax.random.key(candidate))[0], [group])
        order = tuple(np.asarray(local))
        if order not in seen:
            seen.add(order)
            keys.append(candidate)
        if len(seen) == count:
            return keys
    raise AssertionError("could not find every visiting order")


def test_alignment_update_raises_teacher_gradient_inner_products():
    """Fish/Reptile claim. With inner SGD of step α and β_align = 1, the alignment update
    θ' = θ − (θ − θ̃) and the plain summed-gradient step θ'' = θ − α Σ_i g_i agree to first order
    and differ by α² Σ_{i<j} H_j g_i, whose mean over visiting orders is (α²/2) ∇ Σ_{i<j} g_iᵀ g_j:
    the teachers' gradients must be more aligned (larger mean pairwise inner product) at θ'.
    Exact mean over all 3! orders, float64, small α (the regime of the expansion; at α ≥ 0.03
    third-order terms already flip the sign on some of these random problems)."""
    lr = 0.01
    gains = []
    align = jax.jit(lambda learner, group, images, key: alignment.alignment_gradient(
        learner, [group], [images], key, inner_lr=lr, beta_align=1.0, crop_padding=0, flip=False,
        inner_optimizer="sgd")[0])
    with jax.enable_x64(True):
        for seed in range(4):
            learner, group, images = (to_f64(x) for x in make_problem(seed, num_teachers=3))
            summed = jax.tree_util.tree_map(lambda *g: sum(g), *[
                jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(learner.params),
                                             _split_like(g, learner.params))
                for g in _teacher_gradients(learner, group, images, learner.params)])
            plain = jax.tree_util.tree_map(lambda p, g: p - lr * g, learner.params, summed)
            directions = [align(learner, group, images, jax.random.key(k)) for k in _all_order_keys(group)]
            mean_direction = jax.tree_util.tree_map(lambda *d: sum(d) / len(d), *directions)
            aligned = jax.tree_util.tree_map(lambda p, d: p - d, learner.params, mean_direction)
            gains.append(_mean_pairwise_inner_product(_teacher_gradients(learner, group, images, aligned))
                         - _mean_pairwise_inner_product(_teacher_gradients(learner, group, images, plain)))
    assert all(gain > 0 for gain in gains), gains


def _split_like(flat, tree):
    leaves, out, offset = jax.tree_util.tree_leaves(tree), [], 0
    for leaf in leaves:
        out.append(flat[offset:offset + leaf.size].reshape(leaf.shape))
        offset += leaf.size
    return out


def test_the_kernel_gradient_form_reaches_the_students_convolutions():
    """"convolution" takes the student's kernel gradients as convolutions; "windows" as products of
    the input windows (no convolution): the first program has more convolutions."""
    learner, group, images = make_problem(0)

    def convolutions(form):
        jaxpr = jax.make_jaxpr(lambda m, g, im, k: alignment.alignment_gradient(
            m, [g], [im], k, crop_padding=2, flip=True, kernel_gradient=form))(learner, group, images,
                                                                               jax.random.key(1))
        return str(jaxpr).count("conv_general_dilated")

    assert convolutions("convolution") > convolutions("windows")
