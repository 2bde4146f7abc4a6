"""Backbones (Conv4, ResNet-10/18) and the generator, run through pure ``apply`` functions."""
from __future__ import annotations

import flax.linen as nn

from free_jax.models.apply import (
    apply,
    apply_and_update_stats,
    apply_nested,
    apply_with_bn_inputs,
    init_variables,
    param_count,
)
from free_jax.models.batchnorm import BatchNorm, BNMode
from free_jax.models.conv4 import Conv4
from free_jax.models.generator import Generator
from free_jax.models.resnet import ResNet

ARCHITECTURES = ("conv4", "resnet10", "resnet18")


def build_backbone(arch: str, num_classes: int, width: int | None = None) -> nn.Module:
    """The classifier module named ``arch`` with ``num_classes`` outputs.

    Args:
      arch: one of ``ARCHITECTURES``.
      num_classes: N of the N-way task.
      width: channel width; defaults to 32 for Conv4 (the meta-learner's) and 64 for ResNets.
    """
    if arch == "conv4":
        return Conv4(num_classes=num_classes, width=width or 32)
    if arch == "resnet10":
        return ResNet(num_classes=num_classes, blocks_per_stage=(1, 1, 1, 1), width=width or 64)
    if arch == "resnet18":
        return ResNet(num_classes=num_classes, blocks_per_stage=(2, 2, 2, 2), width=width or 64)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


__all__ = ["ARCHITECTURES", "BatchNorm", "BNMode", "Conv4", "Generator", "ResNet", "apply",
           "apply_and_update_stats", "apply_nested", "apply_with_bn_inputs", "build_backbone", "init_variables",
           "param_count"]
