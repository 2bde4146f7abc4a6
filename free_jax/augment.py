"""Per-sample differentiable augmentation and per-teacher input preparation (docs/algorithm.md §2.1).

One augmented view of the generator's images x (one common resolution, in [0, 1]) is
``v = random_crop_flip(x)``: a random crop (zero padding, as torchvision's
``RandomCrop(padding=4)``) and flip at the generator's resolution, a fresh draw per sample.
Every consumer of that view sees the same crop: the meta-learner takes v itself (it normalises
its own input), and a teacher takes ``normalize(resize(v))``, v resized to its input size when
it differs (multi-domain scenario), then normalised with its mean/std — crop first, resize
after, so the teacher's and the meta-learner's inputs show the same pixels. Every operation is
differentiable in the pixels, so gradients reach the generator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def resize_to(images: jnp.ndarray, image_shape) -> jnp.ndarray:
    """Bilinear resize of (B, H, W, C) images to ``image_shape`` = (H', W', C) (no-op if equal).

    Raises:
      ValueError: on a channel mismatch (a 1-channel generator cannot feed an RGB teacher).
    """
    height, width, channels = (int(d) for d in image_shape)
    if images.shape[-1] != channels:
        raise ValueError(f"generator makes {images.shape[-1]}-channel images, teacher expects "
                         f"{channels} channels; channel conversion is not supported")
    if images.shape[1:3] == (height, width):
        return images
    return jax.image.resize(images, (images.shape[0], height, width, channels), method="bilinear")


def random_crop(key: jax.Array, images: jnp.ndarray, padding: int) -> jnp.ndarray:
    """Per-sample random crop of (B, H, W, C) images with ``padding`` pixels of zero padding.

    Sample b is cut at offsets (dy_b, dx_b) ∈ {0..2·padding}² of its zero-padded image
    (torchvision's ``RandomCrop(size, padding)``); ``padding=0`` returns the images.
    """
    if padding <= 0:
        return images
    batch, height, width, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)

    def crop_one(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, image.shape[-1]))

    return jax.vmap(crop_one)(padded, offsets)


def random_flip(key: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
    """Per-sample random horizontal flip of (B, H, W, C) images, each with probability 1/2."""
    coins = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(coins[:, None, None, None], images[:, :, ::-1, :], images)


def random_crop_flip(key: jax.Array, images: jnp.ndarray, padding: int = 4,
                     flip: bool = True) -> jnp.ndarray:
    """Per-sample random crop with zero padding and random horizontal flip.

    Each sample b gets its own offsets (dy_b, dx_b) ∈ {0..2·padding}² in the zero-padded image
    and its own coin for the flip (probability 1/2).

    Args:
      key: PRNG key, split into (crop key, flip key); the same key gives the same crops and flips
        for any image size.
      images: (B, H, W, C).
      padding: pixels of zero padding on each side (0: no crop).
      flip: whether to flip horizontally at random.
    """
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(crop_key, images, padding)
    return random_flip(flip_key, images) if flip else images


def teacher_input(views01: jnp.ndarray, image_shape, mean, std) -> jnp.ndarray:
    """A teacher's input from an already augmented view: ``normalize(resize_to(v, shape))``.

    Args:
      views01: (B, H, W, C) augmented images in [0, 1] at the generator's resolution.
      image_shape: the teacher's (H', W', C). mean, std: (C,) its normalisation.
    """
    return (resize_to(views01, image_shape) - mean) / std

