"""A group of teachers that share one architecture and input shape, stacked for vectorised use."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class TeacherGroup:
    """T teachers of one architecture and image shape, their weights stacked on a leading axis.

    Attributes:
      variables: ``{"params", "batch_stats"}`` with every leaf shaped (T, ...).
      class_ids: int32 (T, N): global class id of each teacher's output n (labels are relative).
      mean, std: float32 (T, C): each teacher's input normalisation (teachers of one group may
        come from different datasets of the same image shape).
      module: the Flax module (static). arch: its name. image_shape: (H, W, C) it expects.
    Teachers are always run with ``bn_mode="running"`` (frozen, inference statistics).
    """

    variables: Any
    class_ids: jnp.ndarray
    mean: jnp.ndarray
    std: jnp.ndarray
    module: nn.Module = struct.field(pytree_node=False)
    arch: str = struct.field(pytree_node=False)
    image_shape: tuple = struct.field(pytree_node=False)

    @property
    def size(self) -> int:
        return int(self.class_ids.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.class_ids.shape[1])

    def teacher(self, index: int) -> "TeacherGroup":
        """Group of one: teacher ``index`` (leading axis kept, size 1)."""
        return jax.tree_util.tree_map(lambda leaf: leaf[index:index + 1], self)

    def unstacked(self, index: int):
        """(variables, class_ids, mean, std) of teacher ``index`` without the leading axis."""
        pick = lambda leaf: leaf[index]
        return (jax.tree_util.tree_map(pick, self.variables), self.class_ids[index],
                self.mean[index], self.std[index])
