"""The meta-generator G_φ: its module, parameters and persistent meta-optimiser (docs/algorithm.md §2.1).

``gen_params`` is the generator's ``params`` collection only. The generator's BatchNorm always
normalises with the current batch's statistics and never reads its running statistics, so its
``batch_stats`` are constants (zeros/ones) that the model's own initialisers make at every call
(``generate``); nothing but ``params`` is learned, optimised or checkpointed. The generator's
resolution and channels are read off the shapes of ``gen_params`` too, so one pytree fully
describes it (``generator_module``).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from free_jax import models
from free_jax.inversion.config import InversionConfig


@functools.lru_cache(maxsize=None)
def _param_shapes(image_size: int, channels: int, nz: int, ngf: int) -> tuple[tuple[int, ...], ...]:
    """The leaf shapes (tree order) of a ``Generator``'s parameters, from ``jax.eval_shape`` of its init."""
    module = models.Generator(image_size=image_size, channels=channels, nz=nz, ngf=ngf)
    abstract = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((2, nz), jnp.float32))
    return tuple(leaf.shape for leaf in jax.tree_util.tree_leaves(abstract["params"]))


def generator_module(gen_params, config: InversionConfig) -> models.Generator:
    """The ``Generator`` whose parameters are ``gen_params``.

    Its side s and channels C are read off the parameter shapes, asking the model which leaves
    depend on them: against a 4×4×1 generator's parameters, the leaf that differs in an 8×8×1 one
    holds (s/4)² times as many numbers in ``gen_params``, the leaf that differs in a 4×4×2 one C times.
    """
    shapes = tuple(leaf.shape for leaf in jax.tree_util.tree_leaves(gen_params))
    base = _param_shapes(4, 1, config.nz, config.ngf)
    if len(shapes) != len(base):
        raise ValueError(f"gen_params has {len(shapes)} arrays, a generator with nz={config.nz}, ngf={config.ngf} "
                         f"has {len(base)}")

    def growth(probe):
        """How many times its base size the leaf that differs between ``base`` and ``probe`` is."""
        index = next(i for i, (a, b) in enumerate(zip(base, probe)) if a != b)
        return math.prod(shapes[index]) // math.prod(base[index])

    side = 4 * math.isqrt(growth(_param_shapes(8, 1, config.nz, config.ngf)))
    channels = growth(_param_shapes(4, 2, config.nz, config.ngf))
    return models.Generator(image_size=side, channels=channels, nz=config.nz, ngf=config.ngf)


def generate(gen_params, z: jnp.ndarray, config: InversionConfig) -> jnp.ndarray:
    """G_φ(z): (B, nz) latent codes → (B, s, s, C) images in [0, 1].

    The generator's BatchNorm normalises with batch statistics and never reads its running ones,
    so ``batch_stats`` is not stored: the model creates it with its own initial values (the
    collection is mutable for that) and the update it computes is dropped.
    """
    images, _ = models.apply_nested(generator_module(gen_params, config), {"params": gen_params}, z,
                                    mutable=("batch_stats",))
    return images


def meta_optimizer(config: InversionConfig) -> optax.GradientTransformation:
    """The persistent outer Adam on φ (lr ``meta_lr``, betas ``betas``)."""
    return optax.adam(config.meta_lr, b1=config.betas[0], b2=config.betas[1])


def init_generator(key: jax.Array, config: InversionConfig, image_shape) -> tuple[Any, Any]:
    """A fresh meta-generator for images of ``image_shape`` = (s, s, C), and its Adam state.

    Returns:
      (gen_params, gen_opt_state): the ``params`` collection (see module docstring for BN) and
      the persistent meta-optimiser state.
    """
    height, width, channels = (int(d) for d in image_shape)
    if height != width:
        raise ValueError(f"the generator makes square images, got {image_shape}")
    module = models.Generator(image_size=height, channels=channels, nz=config.nz, ngf=config.ngf)
    gen_params = _init_generator_params(key, module=module)
    return gen_params, meta_optimizer(config).init(gen_params)


@functools.partial(jax.jit, static_argnames="module")
def _init_generator_params(key: jax.Array, *, module) -> Any:
    """The generator's ``params``, one jitted program (op by op, dozens of tiny programs; same bits)."""
    return module.init(key, jnp.zeros((2, module.nz), jnp.float32))["params"]


def meta_update_generator(gen_params, gen_opt_state, meta_grad, config: InversionConfig):
    """One step of the persistent Adam: φ ← φ − Adam(g_φ).

    g_φ is ``InversionResult.meta_grad``: Σ_t ∇_φt L_inv(φ_t, z_t) (FOMAML) or Σ_t (φ − φ_t)
    (Reptile; descending it moves φ towards the adapted φ_t).

    Returns:
      (gen_params, gen_opt_state).
    """
    updates, gen_opt_state = meta_optimizer(config).update(meta_grad, gen_opt_state, gen_params)
    return optax.apply_updates(gen_params, updates), gen_opt_state
