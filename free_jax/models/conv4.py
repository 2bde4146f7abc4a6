"""Conv4: the standard few-shot backbone (4 × [conv3×3, BN, ReLU, max-pool 2] + linear head)."""
import flax.linen as nn
import jax.numpy as jnp

from free_jax.models.batchnorm import BatchNorm, BNMode
from free_jax.models.conv import Conv
from free_jax.models.layers import max_pool_2x2


class Conv4(nn.Module):
    """Conv4 classifier for NHWC images of any size and channel count.

    Attributes:
      num_classes: output logits (N of the N-way task).
      width: channels of every conv block (32 for the meta-learner, 64 for teachers).
    The head is a linear layer on the flattened final feature map, as in reference MAML, so its
    input size depends on the image size (2·2·width at 32 px, 5·5·width at 84 px).
    The convolutions have no bias: BN subtracts the batch (or running) mean right after, so a bias
    there changes nothing but receives a pure rounding-noise gradient, which Adam normalises into
    full learning-rate steps (PyTorch's Conv4 keeps it; the functions are the same).
    """

    num_classes: int
    width: int = 32

    @nn.compact
    def __call__(self, x: jnp.ndarray, bn_mode: BNMode = "batch") -> jnp.ndarray:
        if min(x.shape[1:3]) < 16:
            raise ValueError(f"Conv4 needs images of at least 16×16 (four 2× poolings), got {x.shape[1:3]}")
        for _ in range(4):
            x = Conv(self.width, (3, 3), padding="SAME", use_bias=False)(x)
            x = BatchNorm()(x, bn_mode)
            x = nn.relu(x)
            x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(x)
