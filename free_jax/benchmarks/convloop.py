"""Convolution gradients inside and outside loops: JAX's own rules vs ``free_jax.models.conv``.

XLA:CPU runs JAX's convolution gradients as fast library calls in straight-line code but as
slow emitted loops inside ``lax.scan``/``while`` bodies (docs in ``free_jax/models/conv.py``).
For a Conv4-sized convolution (3×3, SAME) this suite times, per step of a 10-step program, the
kernel gradient and the input gradient written each way, once in a ``lax.scan`` and once
unrolled (medians of interleaved rounds), and checks that each form equals JAX's.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from free_jax.benchmarks import harness
from free_jax.models.conv import conv_general_dilated

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(conv, x, w):
    return conv(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DIMS)


def _forms(x, w, g):
    """name -> (function of a scalar offset c, JAX-rule reference value)."""
    kernel_grad = lambda conv: lambda c: jax.vjp(lambda k: _conv(conv, x + c, k), w)[1](g)[0]
    input_grad = lambda conv: lambda c: jax.vjp(lambda xx: _conv(conv, xx, w + c), x)[1](g)[0]
    return {"kernel gradient": (kernel_grad(lax.conv_general_dilated), kernel_grad(conv_general_dilated)),
            "input gradient": (input_grad(lax.conv_general_dilated), input_grad(conv_general_dilated))}


def _program(fn, steps: int, unroll):
    def body(c, _):
        return c + 1e-9 * jnp.mean(fn(c)), None
    return jax.jit(lambda c: lax.scan(body, c, None, length=steps, unroll=unroll)[0])


def run(small: bool = False) -> str:
    settings = (dict(batch=4, side=8, channels=8, steps=3, rounds=1) if small
                else dict(batch=50, side=16, channels=64, steps=10, rounds=5))
    b, s, ch, steps = settings["batch"], settings["side"], settings["channels"], settings["steps"]
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (b, s, s, ch))
    w = jax.random.normal(keys[1], (3, 3, ch, ch)) * 0.1
    g = jax.random.normal(keys[2], (b, s, s, ch))
    load_before = os.getloadavg()
    programs, errors = {}, {}
    for gradient, (jax_rule, ours) in _forms(x, w, g).items():
        errors[gradient] = float(jnp.max(jnp.abs(jax.jit(jax_rule)(0.0) - jax.jit(ours)(0.0))))
        for form, fn in (("JAX's rule", jax_rule), ("free_jax.models.conv", ours)):
            for where, unroll in (("lax.scan", 1), ("unrolled", True)):
                program = _program(fn, steps, unroll)
                harness.block(program(jnp.float32(0)))                      # compile + warm up
                programs[(gradient, form, where)] = program
    times = {key: [] for key in programs}
    for _ in range(settings["rounds"]):
        for key, program in programs.items():
            times[key].append(harness.median_seconds(lambda: program(jnp.float32(0)), repeats=1, warmup=0))
    ms = {key: np.median(t) / steps * 1e3 for key, t in times.items()}
    rows = [[gradient, form, f"{ms[(gradient, form, 'lax.scan')]:.1f}", f"{ms[(gradient, form, 'unrolled')]:.1f}",
             f"{ms[(gradient, form, 'lax.scan')] / ms[(gradient, form, 'unrolled')]:.1f}×",
             "reference" if form == "JAX's rule" else f"{errors[gradient]:.1e}"]
            for gradient, form, where in programs if where == "lax.scan"]
    table = harness.markdown_table(["gradient", "written as", "ms per step in lax.scan", "ms per step unrolled",
                                    "scan / unrolled", "max abs diff vs JAX's rule"], rows)
    load_after = os.getloadavg()
    return f"""One 3×3 SAME convolution, batch {b}, {s}×{s}, {ch} → {ch} channels (a Conv4 block's);
per step of a {steps}-step jitted program whose body computes the gradient, inside a `lax.scan` and
unrolled; medians of {settings['rounds']} interleaved rounds. JAX's rule: `jax.vjp` of
`lax.conv_general_dilated`; free_jax: `free_jax.models.conv.conv_general_dilated` (what every model
layer uses). Float32; the difference column is over the gradient's entries.

{table}

{harness.load_line(load_before, load_after)}
"""
