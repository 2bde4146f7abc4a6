"""The one data type every loader returns: a class-indexed split of uint8 images."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One meta-split (train/val/test classes) of a dataset.

    Attributes:
      images: uint8 (n, H, W, C).
      labels: int32 (n,), class index in ``0 .. num_classes - 1`` *within this split*.
      class_names: name of each class index, length ``num_classes``.
      mean, std: per-channel normalisation for images scaled to [0, 1]:
        ``x_norm = (images / 255 - mean) / std``.
      name: dataset name in the registry. split: "train", "val" or "test".
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (n, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels shape {self.labels.shape} does not match {self.images.shape[0]} images")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} channels, got {self.mean}, {self.std}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])
