"""CUB-200-2011 from TFDS ``caltech_birds2011``: 100/50/50 classes, images resized to 84x84.

The class split is the one of the few-shot literature (Hilliard et al. 2018; Chen et al.,
"A Closer Look at Few-shot Classification", ICLR 2019): with the 200 classes in their
official order (001.Black_footed_Albatross ... 200.Common_Yellowthroat), class ``i`` is
meta-train if ``i % 2 == 0``, meta-val if ``i % 4 == 1`` and meta-test if ``i % 4 == 3``.
All images of a class (TFDS train + test) belong to its meta-split.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from free_jax.data.base import SplitData

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SIZE = 84
NUM_CLASSES = 200

SPLIT_CLASS_INDICES = {
    "train": tuple(i for i in range(NUM_CLASSES) if i % 2 == 0),
    "val": tuple(i for i in range(NUM_CLASSES) if i % 4 == 1),
    "test": tuple(i for i in range(NUM_CLASSES) if i % 4 == 3),
}


def resize_rgb(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): a grey image gets three channels, then a bilinear resize."""
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.asarray(Image.fromarray(image[..., :3]).resize((size, size), Image.BILINEAR))


def load_cub(split: str, data_dir: str | None = None, image_size: int = IMAGE_SIZE) -> SplitData:
    """One meta-split of CUB-200-2011 (100/50/50 classes), ``image_size`` px (default 84)."""
    from free_jax.data import tfds_reader  # Imports TFDS only when CUB is used.
    arrays, _ = tfds_reader.read_tfds(
        "caltech_birds2011", ("train", "test"), data_dir,
        image_fn=lambda im: resize_rgb(im, image_size), keys=("image", "label", "label_name"))
    wanted = SPLIT_CLASS_INDICES[split]
    new_label = np.full(NUM_CLASSES, -1, np.int64)
    new_label[list(wanted)] = np.arange(len(wanted))
    mapped = new_label[arrays["label"].astype(np.int64)]
    keep = mapped >= 0
    # Class names from the examples' label_name feature where present ("001.Black_footed_...").
    names = {int(label): str(name) for label, name in zip(arrays["label"], arrays["label_name"])}
    class_names = tuple(names.get(i, f"class_{i:03d}") for i in wanted)
    return SplitData(images=arrays["image"][keep], labels=mapped[keep].astype(np.int32),
                     class_names=class_names, mean=IMAGENET_MEAN, std=IMAGENET_STD, name="cub",
                     split=split)
