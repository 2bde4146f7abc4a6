"""Pure functions over a module and its variables; the only way algorithm code runs a model.

A model's variables are ``{"params": ..., "batch_stats": ...}``. Algorithm code differentiates
with respect to ``variables["params"]`` and passes ``batch_stats`` through unchanged.

Each model call is a jitted program of its own (``apply_nested``), nested in the program that calls
it (static: the module, its apply options such as the BatchNorm mode, and the convolutions'
kernel-gradient form, ``free_jax.models.conv``).
JAX traces and lowers a nested program once per module and input shapes and reuses it, and its
derivatives, at every call site: FIVE's k unrolled steps over T teachers and replay's tasks ×
inner steps call the same model dozens of times. XLA inlines the nested calls before it optimises,
so the compiled program computes the same bits, and tracing and lowering take a fraction of the
time (BENCHMARKS.md, "Compile"). Called
outside a jitted program, a model runs as one compiled program; ``jax.disable_jit()`` runs it op
by op (the eager references of ``free_jax.meta.selfcheck`` and of the tests). A trace is reused
for the same module and shapes, so code that swaps a function a model reads while it is traced
(the pooling benchmark) calls ``jax.clear_caches()`` after each swap.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from free_jax.models import conv
from free_jax.models.batchnorm import BNMode

Variables = dict[str, Any]


def init_variables(module: nn.Module, key: jax.Array, image_shape: tuple[int, int, int]) -> Variables:
    """Initialises ``{"params", "batch_stats"}`` for NHWC images of ``image_shape`` = (H, W, C).

    One jitted program per (module, image shape): run op by op, an initialisation compiled a
    program per operation (a hundred or more on XLA:CPU, seconds); the values are the same bits.
    """
    return _init_program(key, module=module, image_shape=tuple(int(d) for d in image_shape))


@functools.partial(jax.jit, static_argnames=("module", "image_shape"))
def _init_program(key: jax.Array, *, module: nn.Module, image_shape: tuple[int, int, int]) -> Variables:
    variables = module.init(key, jnp.zeros((2, *image_shape), jnp.float32), bn_mode="batch")
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def apply_nested(module: nn.Module, variables: Variables, inputs: jnp.ndarray, **options) -> Any:
    """``module.apply(variables, inputs, **options)`` as a nested program (see above): traced once
    per module, options and input shapes. ``options`` are static (``bn_mode``, ``mutable`` as a tuple)."""
    return _nested_program(variables, inputs, module=module, form=conv.current_kernel_gradient(),
                           options=tuple(sorted(options.items())))


@functools.partial(jax.jit, static_argnames=("module", "form", "options"))
def _nested_program(variables, inputs, *, module: nn.Module, form: str, options: tuple):
    with conv.kernel_gradient(form):
        return module.apply(variables, inputs, **dict(options))


def apply(module: nn.Module, variables: Variables, x: jnp.ndarray, bn_mode: BNMode = "batch") -> jnp.ndarray:
    """Logits of ``module`` on images ``x`` (B, H, W, C); running statistics are not updated."""
    return apply_nested(module, variables, x, bn_mode=bn_mode)


def apply_and_update_stats(module: nn.Module, variables: Variables, x: jnp.ndarray):
    """Training-mode forward: logits with batch statistics, and the updated running statistics."""
    logits, updates = apply_nested(module, variables, x, bn_mode="batch", mutable=("batch_stats",))
    return logits, updates["batch_stats"]


def apply_with_bn_inputs(module: nn.Module, variables: Variables, x: jnp.ndarray,
                         bn_mode: BNMode = "running"):
    """Logits plus, for every BatchNorm layer (in call order), the statistics of its input.

    Returns:
      (logits, stats) where ``stats`` is a list of dicts with ``batch_mean``, ``batch_var``
      (biased, over the current batch) and the layer's ``running_mean``, ``running_var``.
    """
    logits, sown = apply_nested(module, variables, x, bn_mode=bn_mode, mutable=("bn_inputs",))
    leaves = jax.tree_util.tree_leaves(
        sown["bn_inputs"], is_leaf=lambda node: isinstance(node, dict) and "batch_mean" in node)
    return logits, leaves


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
