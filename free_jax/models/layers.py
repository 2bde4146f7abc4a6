"""Small shared layers: pooling and upsampling written for fast XLA:CPU code."""
import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2×2 max-pool with stride 2 on NHWC input, flooring odd sizes like PyTorch's MaxPool2d.

    Written as a reshape + max: on XLA:CPU this measured ~1.4× faster than ``nn.max_pool``
    for Conv4 fwd+bwd (../shared/MEASUREMENTS.md) and is identical in value.
    """
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2, :]
    return x.reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))


def upsample_nearest_2x(x: jnp.ndarray) -> jnp.ndarray:
    """×2 nearest-neighbour upsampling of NHWC input (PyTorch ``nn.Upsample(scale_factor=2)``)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)
