"""ResNet-10 / ResNet-18 in the small-image form of few-shot papers.

3×3 stem (64 ch, stride 1, no max-pool), four stages of BasicBlocks (64, 128, 256, 512 ch,
strides 1, 2, 2, 2), global average pool, linear head. ResNet-10 has one block per stage,
ResNet-18 two.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from free_jax.models.batchnorm import BatchNorm, BNMode
from free_jax.models.conv import Conv


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN/ReLU and an identity (or 1×1 projection) shortcut."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, bn_mode: BNMode) -> jnp.ndarray:
        shortcut = x
        y = Conv(self.features, (3, 3), strides=self.stride, padding=1, use_bias=False)(x)
        y = nn.relu(BatchNorm()(y, bn_mode))
        y = Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
        y = BatchNorm()(y, bn_mode)
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = Conv(self.features, (1, 1), strides=self.stride, use_bias=False)(x)
            shortcut = BatchNorm()(shortcut, bn_mode)
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """Small-image ResNet; ``blocks_per_stage`` (1,1,1,1) is ResNet-10, (2,2,2,2) ResNet-18."""

    num_classes: int
    blocks_per_stage: Sequence[int] = (2, 2, 2, 2)
    width: int = 64

    @nn.compact
    def __call__(self, x: jnp.ndarray, bn_mode: BNMode = "batch") -> jnp.ndarray:
        x = Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(BatchNorm()(x, bn_mode))
        for stage, num_blocks in enumerate(self.blocks_per_stage):
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * 2**stage, stride)(x, bn_mode)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
