"""Input normalisation shared by data, teachers, the generator's consumers and the meta-learner."""
import jax.numpy as jnp


def normalize(images01: jnp.ndarray, mean, std) -> jnp.ndarray:
    """``(x − mean) / std`` per channel for images in [0, 1], NHWC; mean/std broadcast on C."""
    mean = jnp.asarray(mean, images01.dtype)
    std = jnp.asarray(std, images01.dtype)
    return (images01 - mean) / std


def to_unit_float(images_uint8: jnp.ndarray) -> jnp.ndarray:
    """uint8 images → float32 in [0, 1]."""
    return images_uint8.astype(jnp.float32) / 255.0
