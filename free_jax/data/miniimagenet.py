"""MiniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) 64/16/20 class split.

MiniImageNet cannot be downloaded by code; the user supplies it under ``data_dir`` in one of
the two common layouts:
  * ``images/`` (JPEG/PNG files) plus ``train.csv``, ``val.csv``, ``test.csv`` (columns
    ``filename,label``; the CSVs may also sit in ``data_dir/split/``), as made by Ravi &
    Larochelle's script; images are resized to 84x84 if they are not already;
  * the widely shared pickles ``mini-imagenet-cache-{train,val,test}.pkl`` (dicts with
    ``image_data`` uint8 (n, 84, 84, 3) and ``class_dict`` {wnid: [indices]}).
Classes are ordered by WordNet id within each split. The standard split's ids are below; a
supplied split that differs is used as given, with a warning.
"""
from __future__ import annotations

import csv
import logging
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from free_jax.data.base import SplitData
from free_jax.data.cub import IMAGENET_MEAN, IMAGENET_STD
from free_jax.data.registry import DataNotFoundError

IMAGE_SIZE = 84

SPLIT_CLASSES = {
    "train": (
        "n01532829", "n01558993", "n01704323", "n01749939", "n01770081", "n01843383",
        "n01910747", "n02074367", "n02089867", "n02091831", "n02101006", "n02105505",
        "n02108089", "n02108551", "n02108915", "n02111277", "n02113712", "n02120079",
        "n02165456", "n02457408", "n02606052", "n02687172", "n02747177", "n02795169",
        "n02823428", "n02966193", "n03017168", "n03047690", "n03062245", "n03207743",
        "n03220513", "n03337140", "n03347037", "n03400231", "n03476684", "n03527444",
        "n03676483", "n03838899", "n03854065", "n03888605", "n03908618", "n03924679",
        "n03998194", "n04067472", "n04243546", "n04251144", "n04258138", "n04275548",
        "n04296562", "n04389033", "n04435653", "n04443257", "n04509417", "n04515003",
        "n04596742", "n04604644", "n04612504", "n06794110", "n07584110", "n07697537",
        "n07747607", "n09246464", "n13054560", "n13133613"),
    "val": (
        "n01855672", "n02091244", "n02114548", "n02138441", "n02174001", "n02950826",
        "n02971356", "n02981792", "n03075370", "n03417042", "n03535780", "n03584254",
        "n03770439", "n03773504", "n03980874", "n09256479"),
    "test": (
        "n01930112", "n01981276", "n02099601", "n02110063", "n02110341", "n02116738",
        "n02129165", "n02219486", "n02443484", "n02871525", "n03127925", "n03146219",
        "n03272010", "n03544143", "n03775546", "n04146614", "n04149813", "n04418357",
        "n04522168", "n07613480"),
}

_HOW_TO = (
    "MiniImageNet cannot be downloaded automatically. Put it in data_dir (--data_dir) as either\n"
    "  <data_dir>/images/*.jpg and <data_dir>/{train,val,test}.csv (Ravi & Larochelle's CSV "
    "split files, columns filename,label), or\n"
    "  <data_dir>/mini-imagenet-cache-{train,val,test}.pkl (the common pickles).")


def _to_84(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return np.asarray(image, np.uint8)


def _from_csv(csv_path: Path, image_dir: Path):
    with open(csv_path, newline="") as f:
        rows = [row for row in csv.DictReader(f)]
    wnids = tuple(sorted({row["label"] for row in rows}))
    index = {w: i for i, w in enumerate(wnids)}
    images = np.stack([_to_84(image_dir / row["filename"]) for row in rows])
    labels = np.asarray([index[row["label"]] for row in rows], np.int32)
    return images, labels, wnids


def _from_pickle(pkl_path: Path):
    with open(pkl_path, "rb") as f:
        data = pickle.load(f)
    wnids = tuple(sorted(data["class_dict"]))
    all_images = np.asarray(data["image_data"], np.uint8)
    order = [np.asarray(data["class_dict"][w], np.int64) for w in wnids]
    images = np.concatenate([all_images[idx] for idx in order])
    labels = np.concatenate([np.full(len(idx), i, np.int32) for i, idx in enumerate(order)])
    return images, labels, wnids


def load_miniimagenet(split: str, data_dir: str | None = None) -> SplitData:
    """One meta-split of MiniImageNet (64/16/20 classes, 600 images each, 84x84x3)."""
    if data_dir is None:
        raise DataNotFoundError(f"MiniImageNet: no data_dir given. {_HOW_TO}")
    root = Path(data_dir).expanduser()
    pkl = root / f"mini-imagenet-cache-{split}.pkl"
    csv_path = next((p for p in (root / f"{split}.csv", root / "split" / f"{split}.csv")
                     if p.is_file()), None)
    if csv_path is not None and (root / "images").is_dir():
        images, labels, wnids = _from_csv(csv_path, root / "images")
    elif pkl.is_file():
        images, labels, wnids = _from_pickle(pkl)
    else:
        raise DataNotFoundError(
            f"MiniImageNet split {split!r} not found in {str(root)!r} (looked for "
            f"images/ + {split}.csv, split/{split}.csv and {pkl.name}). {_HOW_TO}")
    if set(wnids) != set(SPLIT_CLASSES[split]):
        logging.warning("MiniImageNet %s: the supplied %d classes differ from the standard "
                        "Ravi & Larochelle split (%d classes); using them as given.", split,
                        len(wnids), len(SPLIT_CLASSES[split]))
    return SplitData(images=images, labels=labels, class_names=wnids, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, name="miniimagenet", split=split)
