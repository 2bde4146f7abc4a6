"""The FREE/CMI generator: latent code z ∈ R^nz → image in [0, 1] (docs/algorithm.md §3)."""
import flax.linen as nn
import jax.numpy as jnp

from free_jax.models.batchnorm import BatchNorm
from free_jax.models.conv import Conv, UpsampleConv


class Generator(nn.Module):
    """linear → (2·ngf, s/4, s/4), BN, ×2, conv 2ngf, BN, LReLU, ×2, conv ngf, BN, LReLU, conv C, sigmoid.

    Attributes:
      image_size: output side s (must be divisible by 4: 28, 32, 84 all are).
      channels: output channels C.
      nz: latent size. ngf: base width.
    Each ×2 nearest upsampling and the 3×3 convolution after it run as one ``UpsampleConv``: the same
    sums on the small image, in 4/9 of the multiply-adds (``free_jax.models.conv``).
    BatchNorm always uses the batch's statistics (as the reference generator, which is always in
    train mode); its running statistics are never read.
    """

    image_size: int = 32
    channels: int = 3
    nz: int = 256
    ngf: int = 64

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        if self.image_size % 4:
            raise ValueError(f"generator image_size must be divisible by 4, got {self.image_size}")
        init_size = self.image_size // 4
        x = nn.Dense(2 * self.ngf * init_size * init_size)(z)
        x = x.reshape(z.shape[0], init_size, init_size, 2 * self.ngf)
        x = BatchNorm()(x, "batch")
        x = UpsampleConv(2 * self.ngf, (3, 3), padding=1, use_bias=False)(x)  # = Conv of x ×2 upsampled
        x = nn.leaky_relu(BatchNorm()(x, "batch"), 0.2)
        x = UpsampleConv(self.ngf, (3, 3), padding=1, use_bias=False)(x)
        x = nn.leaky_relu(BatchNorm()(x, "batch"), 0.2)
        x = Conv(self.channels, (3, 3), padding=1)(x)
        return nn.sigmoid(x)
