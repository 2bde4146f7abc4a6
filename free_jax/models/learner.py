"""The meta-learner: a backbone, its variables and its input normalisation, as one pytree."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from free_jax import models
from free_jax.normalization import normalize


@struct.dataclass
class MetaLearner:
    """θ of FREE: the small network that adapts to new N-way tasks.

    Attributes:
      variables: ``{"params", "batch_stats"}``; only ``params`` is learned. BatchNorm always
        uses the current batch's statistics (transductive, as reference MAML), so the running
        statistics are never read.
      mean, std: float32 (C,), input normalisation of images in [0, 1].
      module: the backbone (static).
    """

    variables: Any
    mean: jnp.ndarray
    std: jnp.ndarray
    module: nn.Module = struct.field(pytree_node=False)

    @property
    def params(self):
        return self.variables["params"]

    def replace_params(self, params) -> "MetaLearner":
        return self.replace(variables={**self.variables, "params": params})

    def logits_fn(self):
        """``f(params, images01) -> logits``: the pure function MAML differentiates."""
        module, batch_stats, mean, std = self.module, self.variables["batch_stats"], self.mean, self.std

        def logits(params, images01):
            return models.apply(module, {"params": params, "batch_stats": batch_stats},
                                normalize(images01, mean, std), bn_mode="batch")

        return logits


def create_meta_learner(key: jax.Array, arch: str, num_classes: int, image_shape, mean, std,
                        width: int | None = None) -> MetaLearner:
    """A freshly initialised meta-learner (Conv4-32 by default, as the FREE paper's)."""
    module = models.build_backbone(arch, num_classes, width)
    variables = models.init_variables(module, key, tuple(image_shape))
    return MetaLearner(variables=variables, mean=jnp.asarray(mean, jnp.float32),
                       std=jnp.asarray(std, jnp.float32), module=module)
