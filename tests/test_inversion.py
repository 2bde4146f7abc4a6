"""FIVE inversion: losses against hand computations, augmentation, vectorised == loop, baselines.

Teachers here are randomly initialised tiny Conv4s (no zoo needed); shapes are tiny so the
jitted programs compile in seconds.
"""
import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from free_jax import models
from free_jax.augment import random_crop_flip, resize_to
from free_jax.inversion import (
    InversionConfig,
    baselines,
    init_generator,
    inversion_loss,
    invert,
    meta_update_generator,
    relative_targets,
)
from free_jax.losses import (
    adversarial_loss,
    bn_statistics_loss,
    cross_entropy,
    kl_divergence,
    l2_prior,
    total_variation,
)
from free_jax.models.learner import MetaLearner, create_meta_learner
from free_jax.zoo.group import TeacherGroup

CONFIG = InversionConfig(way=3, images_per_class=2, nz=8, ngf=4, k=2, scan_steps=True, flip=True)


def tiny_group(key, num_teachers, image_shape, way=3, first_class=0):
    """A group of random Conv4-8 teachers with distinct global class ids."""
    module = models.build_backbone("conv4", way, 8)
    variables = [models.init_variables(module, k, image_shape) for k in jax.random.split(key, num_teachers)]
    channels = image_shape[-1]
    return TeacherGroup(
        variables=jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *variables),
        class_ids=first_class + jnp.arange(num_teachers * way, dtype=jnp.int32).reshape(num_teachers, way),
        mean=jnp.full((num_teachers, channels), 0.4), std=jnp.full((num_teachers, channels), 0.3),
        module=module, arch="conv4", image_shape=tuple(image_shape))


def trained_tiny_teacher(key, way=3, size=16, steps=60):
    """One Conv4-8 teacher trained on synthetic classes (class c: a bright band at rows c·5..c·5+4).

    Random ReLU networks barely depend on their input's class, so accuracy tests need a teacher
    that actually separates classes.
    """
    group = tiny_group(key, 1, (size, size, 1), way)
    variables, _, mean, std = group.unstacked(0)
    optimizer = optax.adam(1e-2)

    def batch(batch_key):
        labels = jnp.arange(24) % way
        rows = jnp.arange(size)[None, :]
        bands = ((rows >= labels[:, None] * 5) & (rows < labels[:, None] * 5 + 5)).astype(jnp.float32)
        images = 0.2 + 0.6 * bands[:, :, None, None] + 0.1 * jax.random.normal(batch_key, (24, size, size, 1))
        return (jnp.clip(images, 0, 1) - mean) / std, labels

    def step(carry, step_key):
        variables, opt_state = carry
        x, y = batch(step_key)

        def loss_fn(params):
            logits, stats = models.apply_and_update_stats(group.module, {**variables, "params": params}, x)
            return cross_entropy(logits, y), stats

        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = optimizer.update(grads, opt_state)
        return ({"params": optax.apply_updates(variables["params"], updates), "batch_stats": stats},
                opt_state), None

    train = jax.jit(lambda v, keys: jax.lax.scan(step, (v, optimizer.init(v["params"])), keys)[0][0])
    trained = train(variables, jax.random.split(jax.random.fold_in(key, 1), steps))
    return group.replace(variables=jax.tree_util.tree_map(lambda leaf: leaf[None], trained))


def tiny_meta_learner(image_shape, way=3):
    return create_meta_learner(jax.random.key(7), "conv4", way, image_shape, [0.5], [0.25], width=8)


# ----------------------------------------------------------------------------- losses
def test_cross_entropy_matches_hand_computation():
    logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    expected = 0.5 * ((math.log(math.e + math.e ** 2 + math.e ** 3) - 3.0) + math.log(3.0))
    assert float(cross_entropy(logits, jnp.array([2, 0]))) == pytest.approx(expected, rel=1e-6)


def test_kl_and_adversarial_loss_match_hand_computation():
    p = np.array([0.25, 0.75])
    q = np.exp([0.0, 0.1]) / np.exp([0.0, 0.1]).sum()
    kl = float(np.sum(p * np.log(p / q)))
    teacher = jnp.log(jnp.array([[0.25, 0.75], [0.75, 0.25]]))   # argmax 1, 0
    student = jnp.array([[0.0, 0.1], [0.0, 0.1]])                 # argmax 1, 1 → mask [1, 0]
    assert float(kl_divergence(teacher, student)[0]) == pytest.approx(kl, rel=1e-5)
    assert float(adversarial_loss(teacher, student)) == pytest.approx(-kl / 2, rel=1e-5)
    # Gradient reaches the meta-learner's logits only on agreeing samples, raising the KL.
    grad = jax.grad(adversarial_loss, argnums=1)(teacher, student)
    assert np.all(np.asarray(grad[1]) == 0) and np.any(np.asarray(grad[0]) != 0)
    step = student - 0.1 * grad
    assert float(kl_divergence(teacher, step)[0]) > kl


def test_bn_tv_l2_match_hand_computation():
    stats = [{"batch_mean": jnp.array([1.0, 2.0]), "running_mean": jnp.zeros(2),
              "batch_var": jnp.array([1.0, 1.0]), "running_var": jnp.ones(2)},
             {"batch_mean": jnp.array([3.0]), "running_mean": jnp.array([0.0]),
              "batch_var": jnp.array([2.0]), "running_var": jnp.array([6.0])}]
    assert float(bn_statistics_loss(stats)) == pytest.approx(math.sqrt(5) + 0 + 3 + 4, rel=1e-6)
    image = jnp.array([[0.0, 1.0], [2.0, 4.0]])[None, :, :, None]
    # vertical differences 2, 3 → mean square 6.5; horizontal 1, 2 → 2.5
    assert float(total_variation(image)) == pytest.approx(9.0)
    assert float(l2_prior(image)) == pytest.approx((0 + 1 + 4 + 16) / 4)


# ----------------------------------------------------------------------------- augmentation
def test_random_crop_flip_is_per_sample_shift_and_flip():
    images = jax.random.uniform(jax.random.key(0), (16, 6, 6, 1))
    out = np.asarray(jax.jit(random_crop_flip, static_argnums=(2, 3))(jax.random.key(1), images, 2, True))
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    transforms = set()
    for b in range(16):
        matches = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if np.allclose(out[b], (lambda c: c[:, ::-1] if f else c)(padded[b, dy:dy + 6, dx:dx + 6]))]
        assert matches, f"sample {b} is not a padded crop (+flip) of its input"
        transforms.add(matches[0])
    assert len(transforms) > 4                                   # drawn per sample
    assert any(t[2] for t in transforms) and not all(t[2] for t in transforms)
    np.testing.assert_array_equal(random_crop_flip(jax.random.key(1), images, 0, False), images)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(random_crop_flip(jax.random.key(1), x, 2, True) ** 2)))(images)
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0


def test_resize_to_shape_and_channel_error():
    images = jnp.ones((2, 16, 16, 1)) * 0.3
    resized = resize_to(images, (20, 20, 1))
    chex.assert_shape(resized, (2, 20, 20, 1))
    np.testing.assert_allclose(resized, 0.3, atol=1e-6)
    assert resize_to(images, (16, 16, 1)) is images
    with pytest.raises(ValueError, match="channel"):
        resize_to(images, (16, 16, 3))


def test_teacher_and_meta_learner_see_one_view_crop_then_resize(monkeypatch):
    """docs/algorithm.md §2.1: the crop is drawn at the generator's resolution (16 px) and then resized to
    the teacher's (24 px), so the teacher's input is normalize(resize(the meta-learner's crop))."""
    group = tiny_group(jax.random.key(1), 1, (24, 24, 1))
    variables, _, mean, std = group.unstacked(0)
    config = dataclasses.replace(CONFIG, crop_padding=4, flip=True)
    gen_params, _ = init_generator(jax.random.key(0), config, (16, 16, 1))
    seen = {}
    apply = models.apply

    def spy_apply(module, variables, images, *args, **kwargs):
        seen["teacher"] = images
        return apply(module, variables, images, *args, **kwargs)

    class RecordingMetaLearner:
        params = {}

        def logits_fn(self):
            def logits(params, images01):
                seen["meta_learner"] = images01
                return jnp.zeros((images01.shape[0], config.way))
            return logits

    monkeypatch.setattr(models, "apply", spy_apply)
    z = jax.random.normal(jax.random.key(4), (config.batch_size, config.nz))
    inversion_loss(gen_params, z, jax.random.key(2), variables, mean, std, relative_targets(config),
                   module=group.module, image_shape=group.image_shape, config=config,
                   meta_learner=RecordingMetaLearner())
    chex.assert_shape(seen["meta_learner"], (config.batch_size, 16, 16, 1))
    chex.assert_shape(seen["teacher"], (config.batch_size, 24, 24, 1))
    np.testing.assert_allclose(seen["teacher"], (resize_to(seen["meta_learner"], (24, 24, 1)) - mean) / std,
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- FIVE
def test_invert_recovers_images_in_range_and_its_meta_gradient_drives_a_fomaml_update():
    """(Every teacher strategy against the eager loop, in float64: tests/test_strategy_parity.py.)"""
    group = tiny_group(jax.random.key(1), 2, (16, 16, 1))
    gen_params, opt_state = init_generator(jax.random.key(0), CONFIG, (16, 16, 1))
    result = jax.jit(lambda p, key: invert(p, [group], None, key, CONFIG, True))(gen_params, jax.random.key(3))
    chex.assert_shape(result.images, (2 * 6, 16, 16, 1))
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    chex.assert_tree_all_finite((result.meta_grad, result.metrics))
    # FOMAML meta-update: the first Adam step moves each parameter by ≈ lr against its gradient.
    updated, _ = meta_update_generator(gen_params, opt_state, result.meta_grad, CONFIG)
    kernel_grad = np.asarray(result.meta_grad["Conv_1"]["kernel"])
    delta = np.asarray(updated["Conv_1"]["kernel"] - gen_params["Conv_1"]["kernel"])
    big = np.abs(kernel_grad) > 1e-5
    assert big.any()
    np.testing.assert_allclose(delta[big], -CONFIG.meta_lr * np.sign(kernel_grad[big]), rtol=1e-2)


def test_auto_maps_teachers_with_lax_map_on_cpu_when_steps_are_scanned():
    """On the CPU, "auto" maps FIVE's teachers with ``lax.map`` when the k steps are scanned (the
    default: one teacher's loop compiled once) and with the Python loop when they are unrolled;
    an explicit strategy is kept."""
    assert jax.default_backend() == "cpu"
    assert InversionConfig().scan_steps
    assert dataclasses.replace(CONFIG, strategy="auto", scan_steps=True).teacher_strategy() == "lax_map"
    assert dataclasses.replace(CONFIG, strategy="auto", scan_steps=False).teacher_strategy() == "loop"
    assert dataclasses.replace(CONFIG, strategy="loop", scan_steps=True).teacher_strategy() == "loop"
    assert dataclasses.replace(CONFIG, strategy="auto", scan_steps=False).kernel_gradient_form() == "convolution"
    assert InversionConfig().kernel_gradient_form() == "windows"


def test_kernel_gradient_setting_changes_the_program_not_the_numbers():
    """``InversionConfig.kernel_gradient="convolution"`` (JAX's convolution rule in FIVE's
    unrolled program) recovers what the loop-friendly "windows" form does, up to float32
    reordering; "auto" picks the convolution rule only where nothing loops; an unknown form is
    refused when the config is built."""
    unrolled = dataclasses.replace(CONFIG, strategy="loop", scan_steps=False)
    assert unrolled.kernel_gradient_form() == "convolution"
    assert dataclasses.replace(unrolled, scan_steps=True).kernel_gradient_form() == "windows"
    assert dataclasses.replace(unrolled, strategy="lax_map").kernel_gradient_form() == "windows"
    assert dataclasses.replace(unrolled, kernel_gradient="windows").kernel_gradient_form() == "windows"
    group = tiny_group(jax.random.key(1), 2, (16, 16, 1))
    gen_params, _ = init_generator(jax.random.key(0), CONFIG, (16, 16, 1))
    results = {}
    for form in ("windows", "convolution"):
        config = dataclasses.replace(CONFIG, strategy="loop", scan_steps=False, kernel_gradient=form)
        results[form] = jax.jit(lambda p, key: invert(p, [group], None, key, config, True))(
            gen_params, jax.random.key(3))
    windows, convolution = results["windows"], results["convolution"]
    chex.assert_trees_all_close(windows.images, convolution.images, atol=1e-5)
    chex.assert_trees_all_close(windows.meta_grad, convolution.meta_grad, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match=r"kernel_gradient='im2col'; choose one of \('auto', 'windows', "):
        dataclasses.replace(CONFIG, kernel_gradient="im2col")


def test_invert_several_groups_shapes_and_global_labels():
    """Two groups (16 px teachers, and 20 px teachers fed resized images), adversarial on."""
    groups = [tiny_group(jax.random.key(1), 2, (16, 16, 1)),
              tiny_group(jax.random.key(2), 1, (20, 20, 1), first_class=10)]
    meta_learner = tiny_meta_learner((16, 16, 1))
    gen_params, _ = init_generator(jax.random.key(0), CONFIG, (16, 16, 1))
    run = lambda p, key: invert(p, groups, meta_learner, key, CONFIG, False)
    shapes = jax.eval_shape(run, gen_params, jax.random.key(3))
    assert shapes.images.shape == (3 * 6, 16, 16, 1) and shapes.labels.shape == (18,)
    assert [s.shape for s in shapes.per_group_images] == [(2, 6, 16, 16, 1), (1, 6, 16, 16, 1)]
    assert set(shapes.metrics) == {"loss", "ce", "adv", "bn", "teacher_acc", "teacher_acc_aug"}
    # Only the labels are asked for, so the compiled program is tiny (dead code is dropped).
    labels = jax.jit(lambda p, key: run(p, key).labels)(gen_params, jax.random.key(3))
    np.testing.assert_array_equal(labels, [0, 1, 2] * 2 + [3, 4, 5] * 2 + [10, 11, 12] * 2)


def test_warmup_and_reptile_meta_gradient():
    group = tiny_group(jax.random.key(1), 2, (16, 16, 1))
    with pytest.raises(ValueError, match="meta_learner"):
        invert({}, [group], None, jax.random.key(0), CONFIG, warmup=False)
    config = dataclasses.replace(CONFIG, meta_update="reptile", strategy="vmap", scan_steps=False, k=1)
    gen_params, _ = init_generator(jax.random.key(0), config, (16, 16, 1))
    from free_jax.inversion import adapt_generator
    z = jax.random.normal(jax.random.key(4), (2, config.batch_size, config.nz))
    result = jax.jit(lambda p: adapt_generator(p, group, z, relative_targets(config),
                                               jax.random.key(5), config))(gen_params)
    expected = jax.tree_util.tree_map(lambda phi, adapted: 2 * phi - adapted.sum(0),
                                      gen_params, result.adapted_params)
    chex.assert_trees_all_close(result.meta_grad, expected, atol=1e-6)
    assert float(result.metrics["adv"]) == 0.0
    assert not np.allclose(result.adapted_params["Dense_0"]["kernel"][0], gen_params["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match="meta_update"):
        InversionConfig(meta_update="maml")


def test_a_traced_warmup_flag_computes_what_the_static_one_does():
    """The training step passes FIVE's warm-up as a traced bool (one program for the warm-up and
    the later iterations, the adversarial term behind a ``lax.cond``): in float64, jitted, either
    value gives the numbers of the program built for it with a Python bool."""
    to_f64 = lambda tree: jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)
    config = dataclasses.replace(CONFIG, strategy="loop", scan_steps=False, images_per_class=8, k=1)
    assert config.lambda_adv != 0
    with jax.enable_x64(True):
        group = to_f64(tiny_group(jax.random.key(1), 1, (16, 16, 1)))
        variables, _, mean, std = group.unstacked(0)
        # A teacher's own weights as meta-learner: some samples agree, so the adversarial term is not 0.
        learner = MetaLearner(variables=variables, mean=mean, std=std, module=group.module)
        gen_params = to_f64(init_generator(jax.random.key(0), config, (16, 16, 1))[0])
        key = jax.random.key(3)
        traced = jax.jit(lambda p, warmup: invert(p, [group], learner, key, config, warmup))
        for warmup in (True, False):
            static = jax.jit(lambda p: invert(p, [group], learner, key, config, warmup))(gen_params)
            switched = traced(gen_params, jnp.asarray(warmup))
            assert (float(switched.metrics["adv"]) == 0.0) == warmup
            for name, a, b in (("images", switched.images, static.images), ("meta-gradient", switched.meta_grad,
                                                                             static.meta_grad),
                               ("metrics", switched.metrics, static.metrics)):
                chex.assert_trees_all_close(a, b, atol=1e-12, rtol=1e-10, custom_message=name)
        assert traced._cache_size() == 1


def test_adversarial_gradient_flows_through_meta_learner_only_by_default():
    group = tiny_group(jax.random.key(1), 1, (16, 16, 1))
    variables, _, mean, std = group.unstacked(0)
    # The teacher's own weights as meta-learner (batch-statistics BN): many samples agree.
    meta_learner = MetaLearner(variables=variables, mean=mean, std=std, module=group.module)
    base = dataclasses.replace(CONFIG, images_per_class=8)      # 24 samples: some agree
    gen_params, _ = init_generator(jax.random.key(0), base, (16, 16, 1))
    z = jax.random.normal(jax.random.key(4), (base.batch_size, base.nz))
    grads = {}
    for through in (True, False):
        config = dataclasses.replace(base, adv_through_meta_learner=through, lambda_bn=0.5)
        fn = jax.jit(jax.value_and_grad(lambda codes: inversion_loss(
            gen_params, codes, jax.random.key(2), variables, mean, std, relative_targets(config),
            module=group.module, image_shape=group.image_shape, config=config,
            meta_learner=meta_learner)[1][0]["adv"]))
        adv, grad = fn(z)
        assert float(adv) < 0                                   # some samples agree
        grads[through] = np.asarray(grad)
    assert np.all(np.isfinite(grads[True])) and not np.allclose(grads[True], grads[False])


# ----------------------------------------------------------------------------- baselines
def test_fresh_generator_and_pixel_inversion_raise_teacher_accuracy():
    group = trained_tiny_teacher(jax.random.key(1))
    config = dataclasses.replace(CONFIG, images_per_class=4, lambda_bn=0.01, flip=False)
    fresh = jax.jit(lambda key: baselines.invert_fresh_generator(key, group, config, steps=40, lr=1e-2))(
        jax.random.key(0))
    chex.assert_shape(fresh.images, (1, 12, 16, 16, 1))
    np.testing.assert_array_equal(fresh.labels[0, :3], [0, 1, 2])
    history = np.asarray(fresh.accuracy_history[0])
    assert history.shape == (41,) and history[-1] >= history[0] + 0.3
    pixels = jax.jit(lambda key: baselines.invert_pixels(key, group, config, steps=40))(jax.random.key(0))
    history = np.asarray(pixels.accuracy_history[0])
    assert float(pixels.images.min()) >= 0 and float(pixels.images.max()) <= 1
    assert history[-1] >= history[0] + 0.3
