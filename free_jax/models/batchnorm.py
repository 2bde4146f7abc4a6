"""BatchNorm with an explicit statistics mode and a tap on its inputs.

Flax's own ``nn.BatchNorm`` ties the choice of statistics to mutability; FREE needs three
distinct uses of the same layer, so the mode is an explicit argument:

* ``bn_mode="batch"``   normalise with the current batch's statistics (training, generator,
  and the transductive adaptation/scoring of MAML). Running statistics are updated only when
  the caller makes the ``batch_stats`` collection mutable.
* ``bn_mode="running"`` normalise with the running statistics (inference, frozen teachers).

When the ``bn_inputs`` collection is mutable, every layer sows the mean and (biased) variance
of the features entering it, next to its running statistics; the DeepInversion BN-statistics
loss reads them (see ``free_jax.models.apply.apply_with_bn_inputs``).
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

BNMode = Literal["batch", "running"]


class BatchNorm(nn.Module):
    """Batch normalisation over all axes but the last (NHWC features or (B, F) vectors).

    Attributes:
      momentum: running = momentum · running + (1 − momentum) · batch (PyTorch's 0.1 ≙ 0.9).
      epsilon: added to the variance before the square root.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jnp.ndarray, bn_mode: BNMode) -> jnp.ndarray:
        if bn_mode not in ("batch", "running"):
            raise ValueError(f"bn_mode must be 'batch' or 'running', got {bn_mode!r}")
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,))
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,))

        axes = tuple(range(x.ndim - 1))
        batch_mean = jnp.mean(x, axis=axes)
        batch_var = jnp.mean(jnp.square(x - batch_mean), axis=axes)
        if self.is_mutable_collection("bn_inputs"):
            self.sow("bn_inputs", "stats",
                     {"batch_mean": batch_mean, "batch_var": batch_var,
                      "running_mean": running_mean.value, "running_var": running_var.value})

        if bn_mode == "running":
            mean, var = running_mean.value, running_var.value
        else:
            mean, var = batch_mean, batch_var
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                n = x.size // features
                unbiased_var = batch_var * n / max(n - 1, 1)  # as PyTorch tracks it
                running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * batch_mean
                running_var.value = self.momentum * running_var.value + (1 - self.momentum) * unbiased_var
        inv = jnp.reciprocal(jnp.sqrt(var + self.epsilon)) * scale
        return (x - mean) * inv + bias
