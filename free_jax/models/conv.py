"""The convolution every model layer uses: ``lax.conv_general_dilated`` with a backward pass
that XLA:CPU runs fast inside loops.

Why (BENCHMARKS.md, "Convolutions inside loops"): XLA:CPU runs JAX's own convolution
gradients as fast library calls in straight-line code, but inside a ``lax.scan``/``while``
body it emits them as naive loops, 9-72× slower (Conv4-sized, 64 channels, batch 50 at
16×16: kernel gradient 1.32 s vs 18 ms, input gradient 29 ms vs 3.2 ms). JAX writes both
gradients as convolutions with permuted dimension numbers (for the input gradient the kernel's
in/out roles swapped, for the kernel gradient the batch axis contracted as a feature), and in
a loop body XLA:CPU does not re-layout those operands. Here the same sums are written so
that it does not have to:

  input gradient:   dx = conv(g, flip(W)ᵀ) (kernel flipped in space, in/out swapped,
                    padding K - 1 - p) for stride 1, itself through this function, so that
                    second derivatives stay loop-friendly too; for other strides JAX's
                    transposed convolution of a forward convolution on the kernel physically
                    swapped to (H, W, O, I), so that it reads a kernel laid out as (H, W, in, out);
  kernel gradient:  dW[h, w, i, o] = Σ_{b, y, x} x̃[b, s·y + h, s·x + w, i] · g[b, y, x, o]
                    (x̃: x zero-padded, s: stride) by im2col on the CPU: the K_h·K_w strided
                    windows of x̃ stacked, one contraction with g (14 ms in and out of
                    loops, faster than JAX's 18 ms even in straight-line code). On other
                    backends JAX's own rule (the vendor convolution library) is kept.

The values are the same sums (float64 agreement to rounding, tests/test_models.py), and
every order of derivative is exact: the backward pass is itself differentiable JAX, so
second-order MAML differentiates through it. Forward-mode (``jax.jvp``) is not available
through a custom VJP; nothing in free_jax uses it. Convolutions outside the common case
(dilations, feature groups, other dimension orders) keep JAX's own kernel gradient.

The kernel gradient's window copies cost memory in second-order programs: XLA's temporaries
of the FIVE recovery program are about 3× those with JAX's convolution-based rule (BENCHMARKS.md,
"Where the free suite's memory goes"). Programs without loops can take JAX's rule instead:
convolutions traced inside ``with kernel_gradient("convolution"):`` do (each form's values are
the same sums; the form is fixed when the convolution is traced).

``UpsampleConv`` (the generator's): a 3×3 convolution of a ×2 nearest-upsampled input, computed on
the small input with four 2×2 phase kernels (``upsampled_conv_general_dilated``), 4/9 of the
multiply-adds for the same sums.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
KERNEL_GRADIENTS = ("windows", "convolution")
_FORM = contextvars.ContextVar("free_jax_kernel_gradient", default="windows")
RGB_CHANNELS, PADDED_CHANNELS = 3, 4     # on the CPU, 3-channel inputs are convolved as 4 (see below)


@contextlib.contextmanager
def kernel_gradient(form: str):
    """Convolutions traced within take their kernel gradient on the CPU as ``form``: "windows"
    (the default: products of the input windows, fast inside loop bodies) or "convolution"
    (JAX's own rule: in straight-line code 1.0-1.3× the windows' time per convolution, yet the
    whole FIVE recovery program ran faster with it; about a third of the memory in
    second-order programs, but an emitted loop 100× slower inside ``lax.scan``/``while`` bodies).
    A jitted caller must make the form part of its static arguments (a trace does not see it)."""
    if form not in KERNEL_GRADIENTS:
        raise ValueError(f"kernel_gradient={form!r}; choose one of {KERNEL_GRADIENTS}")
    token = _FORM.set(form)
    try:
        yield
    finally:
        _FORM.reset(token)


def current_kernel_gradient() -> str:
    """The kernel-gradient form convolutions traced here take (``kernel_gradient``)."""
    return _FORM.get()


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """``lax.conv_general_dilated`` (same arguments, same values) with the loop-friendly VJP above.

    Pass it to Flax as ``nn.Conv(..., conv_general_dilated=conv_general_dilated)``.

    On the CPU a 3-channel input (RGB images: every model's first layer) gets a fourth, zero
    channel and the kernel a zero input slice: the same sums (the added products are 0 · 0), and
    XLA:CPU runs 4-channel convolutions several times faster than 3-channel ones (BENCHMARKS.md,
    "RGB input convolutions"). The padding is differentiable (its transpose is a slice), so every
    gradient and second derivative flows through it.
    """
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    strides = tuple(int(s) for s in window_strides)
    static = (("window_strides", strides),
              ("padding", _explicit_padding(lhs, rhs, dims, strides, padding)),
              ("lhs_dilation", None if lhs_dilation is None else tuple(int(d) for d in lhs_dilation)),
              ("rhs_dilation", None if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)),
              ("dimension_numbers", dims), ("feature_group_count", int(feature_group_count)),
              ("batch_group_count", int(batch_group_count)), ("precision", precision),
              ("preferred_element_type", preferred_element_type))
    if jax.default_backend() == "cpu" and lhs.shape[-1] == RGB_CHANNELS and _is_plain_nhwc(lhs, rhs, dict(static)):
        # the extra channel changes no axis order and no spatial padding: ``static`` stays valid
        lhs = jnp.pad(lhs, ((0, 0), (0, 0), (0, 0), (0, PADDED_CHANNELS - RGB_CHANNELS)))
        rhs = jnp.pad(rhs, ((0, 0), (0, 0), (0, PADDED_CHANNELS - RGB_CHANNELS), (0, 0)))
    return _conv(static, _FORM.get(), lhs, rhs)


def _explicit_padding(lhs, rhs, dims, strides, padding) -> tuple[tuple[int, int], ...]:
    """``padding`` as ((lo, hi), ...) per spatial axis; a string ("SAME", "VALID") resolved for these shapes."""
    if isinstance(padding, str):
        spatial_in = [lhs.shape[d] for d in dims.lhs_spec[2:]]
        window = [rhs.shape[d] for d in dims.rhs_spec[2:]]
        padding = lax.padtype_to_pads(spatial_in, window, strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _conv(static, form, lhs, rhs):
    del form  # read by the backward pass
    return lax.conv_general_dilated(lhs, rhs, **dict(static))


def _conv_fwd(static, form, lhs, rhs):
    return _conv(static, form, lhs, rhs), (lhs, rhs)


def _conv_bwd(static, form, residuals, g):
    lhs, rhs = residuals
    kwargs = dict(static)
    plain = _is_plain_nhwc(lhs, rhs, kwargs)
    transpose_padding = _transpose_padding(rhs.shape[:2], kwargs["padding"])
    if plain and set(kwargs["window_strides"]) == {1} and transpose_padding:
        # stride 1: dx = conv(g, flip(W)ᵀ) padded by K - 1 - p, through this module again so its
        # own derivatives (second-order MAML) are loop-friendly as well
        flipped = jnp.swapaxes(jnp.flip(rhs, (0, 1)), 2, 3)
        with kernel_gradient(form):
            input_grad = conv_general_dilated(g, flipped, (1, 1), transpose_padding, dimension_numbers=_NHWC,
                                              precision=kwargs["precision"])
    else:
        dims = kwargs["dimension_numbers"]
        out_axis, in_axis = dims.rhs_spec[0], dims.rhs_spec[1]
        swapped_dims = lax.ConvDimensionNumbers(dims.lhs_spec, (in_axis, out_axis, *dims.rhs_spec[2:]),
                                                dims.out_spec)
        swapped_kernel = jnp.swapaxes(rhs, out_axis, in_axis)
        swapped_kwargs = dict(kwargs, dimension_numbers=swapped_dims)
        _, input_vjp = jax.vjp(lambda x: lax.conv_general_dilated(x, swapped_kernel, **swapped_kwargs), lhs)
        input_grad = input_vjp(g)[0]
    if jax.default_backend() == "cpu" and plain and form == "windows":
        kernel_grad = _kernel_grad_nhwc(lhs, g, kwargs, rhs.shape[:2])
    else:
        _, kernel_vjp = jax.vjp(lambda w: lax.conv_general_dilated(lhs, w, **kwargs), rhs)
        kernel_grad = kernel_vjp(g)[0]
    return input_grad.astype(lhs.dtype), kernel_grad.astype(rhs.dtype)


def _transpose_padding(kernel_shape, padding):
    """Padding (K - 1 - lo, K - 1 - hi) per spatial axis of the stride-1 input gradient; None if negative."""
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_shape, padding))
    return pads if all(lo >= 0 and hi >= 0 for lo, hi in pads) else None


_conv.defvjp(_conv_fwd, _conv_bwd)


def _is_plain_nhwc(lhs, rhs, kwargs) -> bool:
    undilated = lambda d: d is None or set(d) == {1}
    return (lhs.ndim == 4 and kwargs["dimension_numbers"] == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
            and kwargs["feature_group_count"] == 1 and kwargs["batch_group_count"] == 1
            and undilated(kwargs["lhs_dilation"]) and undilated(kwargs["rhs_dilation"]))


def _kernel_grad_nhwc(lhs, g, kwargs, kernel_shape):
    """dW (module docstring) by im2col: one contraction over (b, y, x) of the K_h·K_w windows of one
    side with the other side: (K_h, K_w, I, O).

    Windows of the padded input x̃ (I channels) in general; for stride 1 with fewer outputs than
    inputs (O < I), shifted copies of the cotangent g instead (O channels, so K_h·K_w·O values per
    position rather than K_h·K_w·I): with m = (y + h, x + w) on x̃'s grid,
      dW[h, w, i, o] = Σ_{b, m} x̃[b, m, i] · g̃_{h,w}[b, m, o],   g̃_{h,w} = g zero-padded by (h, K_h − 1 − h)
    rows and (w, K_w − 1 − w) columns (the generator's last convolution, 64 → 3 channels, reads its
    64-channel input once instead of nine times)."""
    k_h, k_w = kernel_shape
    (s_h, s_w), (_, out_h, out_w, _) = kwargs["window_strides"], g.shape
    padded = jnp.pad(lhs, ((0, 0), *kwargs["padding"], (0, 0)))
    if (s_h, s_w) == (1, 1) and g.shape[-1] < lhs.shape[-1]:
        shifted = jnp.stack([jnp.pad(g, ((0, 0), (i, k_h - 1 - i), (j, k_w - 1 - j), (0, 0)))
                             for i in range(k_h) for j in range(k_w)], axis=3)              # (B, Y', X', K_h·K_w, O)
        grad = jnp.einsum("byxi,byxko->kio", padded, shifted, precision=kwargs["precision"])
    else:
        windows = jnp.stack([padded[:, i: i + s_h * (out_h - 1) + 1: s_h, j: j + s_w * (out_w - 1) + 1: s_w, :]
                             for i in range(k_h) for j in range(k_w)], axis=3)              # (B, Y, X, K_h·K_w, I)
        grad = jnp.einsum("byxki,byxo->kio", windows, g, precision=kwargs["precision"])
    return grad.reshape(k_h, k_w, *grad.shape[1:])


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
Conv.__doc__ = """``flax.linen.Conv`` with the loop-friendly gradient (same parameters and names, ``Conv_<i>``)."""

# Which input rows (columns) the 3×3 kernel's taps read, per output phase, after a ×2 nearest upsampling:
# _PHASE_TAPS[r, a, h] = 1 when kernel row h of an output row of parity r reads low-resolution tap a.
_PHASE_TAPS = (((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))


def upsampled_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                                   dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                                   precision=None, preferred_element_type=None):
    """conv(u, rhs) of u, ``lhs`` ×2 nearest-upsampled (PyTorch's ``nn.Upsample(scale_factor=2)``),
    3×3, stride 1, padding 1, NHWC, computed on ``lhs`` itself.

    After a ×2 nearest upsampling u[2i + r] = x[i] (per axis), an output row of parity r reads
    only two distinct input rows: r = 0 reads x[i - 1] with kernel row 0 and x[i] with rows 1 + 2;
    r = 1 reads x[i] with rows 0 + 1 and x[i + 1] with row 2 (zero padding of u is zero padding
    of x). So with K_rs[a, b] = Σ_{h, w} T[r, a, h] · T[s, b, w] · W[h, w] (T = ``_PHASE_TAPS``),

        y[2i + r, 2j + s] = Σ_{a, b ∈ {0, 1}} K_rs[a, b] · x̄[i + r + a, j + s + b]     (x̄: x padded by 1),

    one VALID 2×2 convolution of x̄ with the four phases' kernels side by side as 4·O output
    channels, then the phases interleaved. The same sums in 4/9 of the multiply-adds (plus the
    (H+1)²/H² border the stacked form computes and drops); gradients reach W through K's linear
    map. Pass it to Flax as ``UpsampleConv`` (an ``nn.Conv``: same parameters and names).

    The phase kernels' gradient always takes the "windows" form, whatever ``kernel_gradient``
    says around it: on the CPU it is faster for these kernels (2×2, 4·O outputs) than JAX's rule,
    and it is loop-friendly (BENCHMARKS.md, "The generator's upsampling convolutions").
    """
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    strides = tuple(int(s) for s in window_strides)
    layout = dict(dimension_numbers=dims, feature_group_count=feature_group_count,
                  batch_group_count=batch_group_count, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation)
    supported = (_is_plain_nhwc(lhs, rhs, layout) and rhs.shape[:2] == (3, 3) and strides == (1, 1)
                 and _explicit_padding(lhs, rhs, dims, strides, padding) == ((1, 1), (1, 1)))
    if not supported:
        raise ValueError("upsampled_conv_general_dilated computes a 3×3, stride-1, padding-1 NHWC convolution "
                         f"of a ×2 upsampled input; got kernel {rhs.shape}, strides {strides}, "
                         f"padding {padding}, dimension numbers {dimension_numbers}. For other convolutions, "
                         "upsample explicitly (jnp.repeat along both spatial axes) and use Conv.")
    batch, height, width, _ = lhs.shape
    out = rhs.shape[3]
    taps = jnp.asarray(_PHASE_TAPS, rhs.dtype)
    phase_kernels = jnp.einsum("rah,sbw,hwio->abirso", taps, taps, rhs).reshape(2, 2, rhs.shape[2], 4 * out)
    padded = jnp.pad(lhs, ((0, 0), (1, 1), (1, 1), (0, 0)))
    with kernel_gradient("windows"):
        stacked = conv_general_dilated(padded, phase_kernels, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NHWC,
                                       precision=precision, preferred_element_type=preferred_element_type)
    stacked = stacked.reshape(batch, height + 1, width + 1, 2, 2, out)
    rows = [jnp.stack([stacked[:, r: r + height, s: s + width, r, s, :] for s in (0, 1)], axis=3) for r in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(batch, 2 * height, 2 * width, out)


UpsampleConv = functools.partial(nn.Conv, conv_general_dilated=upsampled_conv_general_dilated)
UpsampleConv.__doc__ = """``Conv`` of the ×2 nearest-upsampled input (``upsampled_conv_general_dilated``):
``UpsampleConv(f, (3, 3), padding=1)(x)`` = ``Conv(f, (3, 3), padding=1)(u)`` with u = x ×2 nearest-upsampled
(``jnp.repeat`` by 2 along both spatial axes); same parameters and names (``Conv_<i>``)."""
