"""CIFAR-FS (Bertinetto et al., ICLR 2019): CIFAR-100's 100 classes split 64/16/20.

All 600 images of a class (CIFAR-100 train + test) belong to its meta-split. Two sources:
  * the original ``cifar-100-python`` pickles (folder or ``cifar-100-python.tar.gz``) under
    ``data_dir``: a light path, numpy only;
  * TFDS ``cifar100`` prepared under ``data_dir`` (``tfds_reader``).
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from free_jax.data.base import SplitData
from free_jax.data.registry import DataNotFoundError

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# The standard CIFAR-FS split (Bertinetto et al. 2019, the r2d2 split files).
VAL_CLASSES = ("otter", "motorcycle", "television", "lamp", "crocodile", "shark", "butterfly",
               "beaver", "beetle", "tractor", "flatfish", "maple_tree", "camel", "crab", "sea",
               "cattle")
TEST_CLASSES = ("baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck",
                "plain", "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone",
                "wardrobe", "whale", "woman", "worm")
TRAIN_CLASSES = (
    "train", "skyscraper", "turtle", "raccoon", "spider", "orange", "castle", "keyboard", "clock",
    "pear", "girl", "seal", "elephant", "apple", "aquarium_fish", "bus", "mushroom", "possum",
    "squirrel", "chair", "tank", "plate", "wolf", "road", "mouse", "boy", "shrew", "couch",
    "sunflower", "tiger", "caterpillar", "lion", "streetcar", "lawn_mower", "tulip", "forest",
    "dolphin", "cockroach", "bear", "porcupine", "bee", "hamster", "lobster", "bowl", "can",
    "bottle", "trout", "snake", "bridge", "pine_tree", "skunk", "lizard", "cup", "kangaroo",
    "oak_tree", "dinosaur", "rabbit", "orchid", "willow_tree", "ray", "palm_tree", "mountain",
    "house", "cloud")
SPLIT_CLASSES = {"train": TRAIN_CLASSES, "val": VAL_CLASSES, "test": TEST_CLASSES}
# CIFAR-100's fine label ids follow the alphabetical order of the class names.
CIFAR100_FINE_NAMES = tuple(sorted(TRAIN_CLASSES + VAL_CLASSES + TEST_CLASSES))

_ARCHIVE_DIR = "cifar-100-python"


def _find_python_archive(data_dir: str | None) -> Path | None:
    """The cifar-100-python folder or tar.gz under data_dir, if there is one."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    for candidate in (root, root / _ARCHIVE_DIR, root / f"{_ARCHIVE_DIR}.tar.gz"):
        if candidate.is_dir() and (candidate / "meta").is_file():
            return candidate
        if candidate.is_file() and candidate.name.endswith(".tar.gz"):
            return candidate
    return None


def _read_python_archive(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 (n, 32, 32, 3), fine labels, fine label names) of train + test."""
    def load(name: str) -> dict:
        if path.is_dir():
            with open(path / name, "rb") as f:
                return pickle.load(f, encoding="bytes")
        with tarfile.open(path) as archive:
            member = archive.extractfile(f"{_ARCHIVE_DIR}/{name}")
            return pickle.load(io.BytesIO(member.read()), encoding="bytes")

    names = tuple(n.decode() for n in load("meta")[b"fine_label_names"])
    images, labels = [], []
    for part in ("train", "test"):
        batch = load(part)
        images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
                      .transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"fine_labels"], np.int64))
    return np.concatenate(images), np.concatenate(labels), names


def select_classes(images: np.ndarray, labels: np.ndarray, names, wanted) -> tuple:
    """Images of the ``wanted`` class names, relabelled ``0..len(wanted)-1`` in that order."""
    index_of = {n: i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in index_of]
    if missing:
        raise ValueError(f"classes {missing} are not in this dataset's label names")
    new_label = np.full(len(names), -1, np.int64)
    for new, name in enumerate(wanted):
        new_label[index_of[name]] = new
    mapped = new_label[np.asarray(labels, np.int64)]
    keep = mapped >= 0
    return images[keep], mapped[keep].astype(np.int32)


def load_cifar_fs(split: str, data_dir: str | None = None) -> SplitData:
    """One meta-split of CIFAR-FS: 64/16/20 classes, 600 images each, 32x32x3."""
    archive = _find_python_archive(data_dir)
    if archive is not None:
        images, labels, names = _read_python_archive(archive)
    else:
        from free_jax.data import tfds_reader
        try:
            arrays, info = tfds_reader.read_tfds("cifar100", ("train", "test"), data_dir)
        except DataNotFoundError as err:
            raise DataNotFoundError(
                f"CIFAR-FS: no '{_ARCHIVE_DIR}' folder or '{_ARCHIVE_DIR}.tar.gz' in "
                f"data_dir={data_dir!r}, and no prepared TFDS cifar100 there. Either put the "
                f"original CIFAR-100 python archive (cifar-100-python.tar.gz, or its extracted "
                f"folder) in data_dir - read with numpy only - or:\n{err}") from err
        images, labels = arrays["image"], arrays["label"]
        names = tuple(info.features["label"].names)
        if all(n.isdigit() for n in names):  # Builder without its label file (e.g. mock data).
            names = CIFAR100_FINE_NAMES
    images, labels = select_classes(images, labels, names, SPLIT_CLASSES[split])
    return SplitData(images=images, labels=labels, class_names=SPLIT_CLASSES[split],
                     mean=CIFAR100_MEAN, std=CIFAR100_STD, name="cifar_fs", split=split)
