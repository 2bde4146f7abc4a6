"""Backbones and generator: shapes, parameter counts, BatchNorm modes, BN-input taps."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import models
from free_jax.models import conv as conv_lib


def conv4_param_count(channels, width, feature_side, classes):
    convs = 3 * 3 * channels * width + 3 * (3 * 3 * width * width)     # no conv bias before BN
    bns = 4 * 2 * width
    return convs + bns + feature_side * feature_side * width * classes + classes


def resnet_param_count(blocks, classes, width=64):
    count = 3 * 3 * 3 * width + 2 * width  # stem conv + BN
    in_ch = width
    for stage, num_blocks in enumerate(blocks):
        out = width * 2 ** stage
        for block in range(num_blocks):
            count += 9 * in_ch * out + 2 * out + 9 * out * out + 2 * out
            if in_ch != out:
                count += in_ch * out + 2 * out
            in_ch = out
    return count + in_ch * classes + classes


@pytest.mark.parametrize("size,feature_side", [(32, 2), (84, 5)])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_backbone_shapes_and_param_counts(arch, size, feature_side):
    module = models.build_backbone(arch, 5)
    variables = models.init_variables(module, jax.random.key(0), (size, size, 3))
    logits = models.apply(module, variables, jnp.ones((3, size, size, 3)))
    assert logits.shape == (3, 5)
    expected = {"conv4": conv4_param_count(3, 32, feature_side, 5),
                "resnet10": resnet_param_count((1, 1, 1, 1), 5),
                "resnet18": resnet_param_count((2, 2, 2, 2), 5)}[arch]
    assert models.param_count(variables["params"]) == expected
    if arch == "resnet18":
        assert expected == 11_171_397  # the CIFAR ResNet-18 of the literature, 5-way head


def test_conv4_any_channels_and_width():
    module = models.build_backbone("conv4", 4, width=64)
    variables = models.init_variables(module, jax.random.key(1), (28, 28, 1))
    assert models.apply(module, variables, jnp.zeros((2, 28, 28, 1))).shape == (2, 4)
    assert models.param_count(variables["params"]) == conv4_param_count(1, 64, 1, 4)


def test_bn_modes_differ_where_they_should():
    module = models.build_backbone("conv4", 5, width=8)
    variables = models.init_variables(module, jax.random.key(0), (16, 16, 3))
    x = jax.random.normal(jax.random.key(1), (6, 16, 16, 3)) * 3 + 1
    # Running mode: a sample's output does not depend on the rest of the batch.
    running_full = models.apply(module, variables, x, bn_mode="running")
    running_one = models.apply(module, variables, x[:1], bn_mode="running")
    np.testing.assert_allclose(running_full[:1], running_one, rtol=1e-5, atol=1e-5)
    # Batch mode: it does (transductive statistics).
    batch_full = models.apply(module, variables, x, bn_mode="batch")
    batch_two = models.apply(module, variables, x[:2], bn_mode="batch")
    assert not np.allclose(batch_full[:1], batch_two[:1], atol=1e-4)
    assert not np.allclose(batch_full, running_full, atol=1e-4)
    with pytest.raises(ValueError, match="at least 16"):
        models.apply(module, variables, x[:, :8, :8])
    with pytest.raises(ValueError, match="bn_mode"):
        models.apply(module, variables, x, bn_mode="train")


def test_running_stats_update_and_bn_input_taps():
    module = models.build_backbone("conv4", 5, width=4)
    variables = models.init_variables(module, jax.random.key(0), (16, 16, 1))
    x = jax.random.normal(jax.random.key(2), (10, 16, 16, 1)) + 2.0
    _, new_stats = models.apply_and_update_stats(module, variables, x)
    _, taps = models.apply_with_bn_inputs(module, variables, x, bn_mode="running")
    assert len(taps) == 4
    # First BN input = the first conv's output; check its batch mean/var by hand.
    conv_params = variables["params"]["Conv_0"]
    conv_out = jax.lax.conv_general_dilated(x, conv_params["kernel"], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(taps[0]["batch_mean"], conv_out.mean((0, 1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(taps[0]["batch_var"], conv_out.var((0, 1, 2)), rtol=1e-4, atol=1e-5)
    n = conv_out.size // conv_out.shape[-1]
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"], 0.1 * conv_out.mean((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_stats["BatchNorm_0"]["var"],
                               0.9 + 0.1 * conv_out.var((0, 1, 2)) * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(taps[0]["running_var"], 1.0)


def test_generator_range_and_shape():
    generator = models.Generator(image_size=16, channels=3, nz=8, ngf=4)
    variables = generator.init(jax.random.key(0), jnp.zeros((2, 8)))
    images = generator.apply(variables, jax.random.normal(jax.random.key(1), (5, 8)))
    assert images.shape == (5, 16, 16, 3)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    with pytest.raises(ValueError, match="divisible by 4"):
        models.Generator(image_size=30).init(jax.random.key(0), jnp.zeros((2, 256)))


@pytest.mark.parametrize("form", ["windows", "convolution"])
@pytest.mark.parametrize("size, kernel, stride, padding, channels", [
    (9, 3, 1, ((1, 1), (1, 1)), (3, 4)), (8, 3, 1, "SAME", (3, 4)), (8, 3, 1, ((0, 0), (0, 0)), (3, 4)),
    (10, 3, 2, ((1, 1), (1, 1)), (3, 4)), (9, 3, 2, ((1, 1), (1, 1)), (3, 4)), (8, 1, 2, ((0, 0), (0, 0)), (3, 4)),
    # fewer outputs than inputs at stride 1: the kernel gradient shifts the cotangent, not the input
    ((9, 7), 3, 1, ((1, 1), (1, 1)), (5, 2)), ((6, 8), 3, 1, ((2, 0), (0, 1)), (4, 3)),
])
def test_loop_friendly_conv_matches_lax_to_second_order_in_float64(size, kernel, stride, padding, channels, form):
    """free_jax.models.conv has JAX's convolution values and first and second derivatives
    (float64, jitted), for strides 1 and 2, SAME/explicit/no/uneven padding, 1×1 kernels, square
    and non-square inputs, more or fewer outputs than inputs, with either form of kernel gradient;
    the 3-channel inputs take the CPU's zero fourth channel (``RGB_CHANNELS``)."""
    from jax import lax

    from free_jax.models.conv import RGB_CHANNELS, conv_general_dilated, kernel_gradient

    height, width = (size, size) if isinstance(size, int) else size
    channels_in, channels_out = channels
    if channels_in == RGB_CHANNELS:      # the padded path is taken: the lowered program has the 4-channel convolution
        lowered = jax.jit(lambda x, w: conv_general_dilated(x, w, (stride, stride), padding,
                                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))).lower(
            jnp.zeros((2, height, width, channels_in)), jnp.zeros((kernel, kernel, channels_in, channels_out)))
        assert f"x{kernel}x4x{channels_out}xf32" in lowered.as_text()
    with jax.enable_x64(True), kernel_gradient(form):
        keys = jax.random.split(jax.random.key(0), 2)
        x = jax.random.normal(keys[0], (2, height, width, channels_in), jnp.float64)
        w = jax.random.normal(keys[1], (kernel, kernel, channels_in, channels_out), jnp.float64)

        def objective(conv):
            return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding,
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))))

        def derivatives(conv):
            grads = jax.grad(objective(conv), (0, 1))
            second = jax.grad(lambda x, w: sum(jnp.sum(jnp.cos(d)) for d in grads(x, w)), (0, 1))
            return jax.jit(lambda x, w: (objective(conv)(x, w), grads(x, w), second(x, w)))(x, w)

        ours, reference = derivatives(conv_general_dilated), derivatives(lax.conv_general_dilated)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form", ["windows", "convolution"])
@pytest.mark.parametrize("height, width", [(4, 4), (3, 5)])
def test_upsampled_conv_equals_conv_of_the_upsampled_input_to_second_order_in_float64(height, width, form):
    """UpsampleConv's phase-kernel form has the values and first and second derivatives (input and
    kernel; float64, jitted) of a 3×3 padding-1 convolution of the ×2 nearest-upsampled input,
    square and not, with either form of kernel gradient."""
    from jax import lax

    from free_jax.models.conv import kernel_gradient, upsampled_conv_general_dilated

    def upsample_then_conv(x, w):
        upsampled = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return lax.conv_general_dilated(upsampled, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def phase_kernels(x, w):
        return upsampled_conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))

    with jax.enable_x64(True), kernel_gradient(form):
        keys = jax.random.split(jax.random.key(1), 2)
        x = jax.random.normal(keys[0], (2, height, width, 3), jnp.float64)
        w = jax.random.normal(keys[1], (3, 3, 3, 4), jnp.float64)

        def derivatives(conv):
            objective = lambda x, w: jnp.sum(jnp.sin(conv(x, w)))
            grads = jax.grad(objective, (0, 1))
            second = jax.grad(lambda x, w: sum(jnp.sum(jnp.cos(d)) for d in grads(x, w)), (0, 1))
            return jax.jit(lambda x, w: (conv(x, w), grads(x, w), second(x, w)))(x, w)

        ours, reference = derivatives(phase_kernels), derivatives(upsample_then_conv)
        assert ours[0].shape == (2, 2 * height, 2 * width, 4)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_upsample_conv_is_a_flax_conv_with_its_parameters_and_refuses_other_convolutions():
    """UpsampleConv keeps nn.Conv's parameter names and shapes (checkpoints of the generator
    still load) and names the fix for a convolution it does not compute."""
    from free_jax.models.conv import Conv, UpsampleConv

    x = jnp.ones((1, 4, 4, 2))
    ours = UpsampleConv(5, (3, 3), padding=1).init(jax.random.key(0), x)
    plain = Conv(5, (3, 3), padding=1).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, plain)
    with pytest.raises(ValueError, match=r"3×3, stride-1, padding-1 .* upsample explicitly .* and use Conv"):
        UpsampleConv(5, (3, 3), strides=2, padding=1).init(jax.random.key(0), x)


def test_kernel_gradient_form_decides_how_the_gradient_is_written():
    """"windows" writes the kernel gradient as products of input windows (dot_general), and
    "convolution" as JAX's convolution rule (no dot_general); the form is set when the
    convolution is traced; an unknown form is a clear error."""
    from free_jax.models.conv import conv_general_dilated, kernel_gradient

    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    # a new function per trace: JAX caches traces by function and arguments, not by the context
    gradient = lambda: jax.grad(lambda w: jnp.sum(conv_general_dilated(x, w, (1, 1), "SAME",
                                                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    primitives = {}
    for form in ("windows", "convolution"):
        with kernel_gradient(form):
            primitives[form] = str(jax.make_jaxpr(gradient())(w))
    assert "dot_general" in primitives["windows"] and "dot_general" not in primitives["convolution"]
    assert "dot_general" in str(jax.make_jaxpr(gradient())(w))          # the default: windows
    with pytest.raises(ValueError, match=r"kernel_gradient='im2col'; choose one of \('windows', 'convolution'\)"):
        with kernel_gradient("im2col"):
            pass


def test_loop_friendly_conv_gradient_inside_scan_equals_unrolled():
    """The custom VJP gives the same Conv4 parameter gradients inside ``lax.scan`` as unrolled
    (the case it exists for: XLA:CPU's slow convolution gradients in loop bodies)."""
    module = models.Conv4(num_classes=5, width=8)
    images = jax.random.normal(jax.random.key(1), (6, 16, 16, 1))
    variables = models.init_variables(module, jax.random.key(2), (16, 16, 1))
    loss = lambda params: jnp.mean(models.apply(module, {**variables, "params": params}, images, "batch") ** 2)

    def descend(unroll):
        step = lambda params, _: (jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params)), None)
        return jax.jit(lambda p: jax.lax.scan(step, p, None, length=3, unroll=unroll)[0])(variables["params"])

    for a, b in zip(jax.tree.leaves(descend(1)), jax.tree.leaves(descend(True))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _second_order_meta_gradient(apply_patch=None):
    """The jitted 2-task, 1-step second-order meta-gradient of a Conv4-4 (16 px), and how many
    times the Conv4's Python code ran while it was traced."""
    from free_jax.meta import maml
    from free_jax.models.learner import create_meta_learner
    learner = create_meta_learner(jax.random.key(0), "conv4", 3, (16, 16, 1), [0.5], [0.25], 4)
    keys = jax.random.split(jax.random.key(1), 2)
    tasks = maml.Task(jax.random.uniform(keys[0], (2, 3, 16, 16, 1)), jnp.tile(jnp.arange(3), (2, 1)),
                      jax.random.uniform(keys[1], (2, 6, 16, 16, 1)), jnp.tile(jnp.arange(3).repeat(2), (2, 1)))
    calls = []
    original_call = models.Conv4.__call__

    def counting_call(self, *args, **kwargs):
        calls.append(args[0].shape)
        return original_call(self, *args, **kwargs)

    jax.clear_caches()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models.Conv4, "__call__", counting_call)
        if apply_patch is not None:
            patch.setattr(sys.modules["free_jax.models.apply"], "_nested_program", apply_patch)
        gradient = jax.jit(lambda p: maml.meta_gradient(learner.logits_fn(), p, tasks, steps=1, lr=0.1,
                                                        strategy="loop")[0])(learner.params)
    jax.clear_caches()
    return gradient, calls


def test_a_model_is_traced_once_per_input_shape_and_compiles_to_the_same_bits():
    """Model calls are nested jitted programs (free_jax/models/apply.py): the unrolled meta-gradient
    (2 tasks × (1 inner step + the query loss)) runs the model's Python code once per input
    shape, not once per call, and XLA's inlining leaves the compiled numbers bit for bit as a
    program that traces every call in place."""
    nested, nested_calls = _second_order_meta_gradient()

    def in_place(variables, x, *, module, form, options):
        with conv_lib.kernel_gradient(form):
            return module.apply(variables, x, **dict(options))

    inlined, inlined_calls = _second_order_meta_gradient(in_place)
    assert sorted(set(nested_calls)) == [(3, 16, 16, 1), (6, 16, 16, 1)] and len(nested_calls) == 2
    assert len(inlined_calls) == 2 * (1 + 1)
    for a, b in zip(jax.tree_util.tree_leaves(nested), jax.tree_util.tree_leaves(inlined)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
