"""Tests of the registry, the real-dataset loaders (on small fake data) and multi-domain ids."""
import csv
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from free_jax.data import (
    DataNotFoundError,
    SplitData,
    available_datasets,
    cifar_fs,
    combine_domains,
    cub,
    dataset_info,
    load_split,
    miniimagenet,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FREE_JAX_CACHE_DIR", str(tmp_path / "cache"))


def test_registry_lists_datasets_and_rejects_unknown_names():
    assert {"glyphs", "glyphs_outline", "cifar_fs", "cub", "miniimagenet"} <= set(available_datasets())
    with pytest.raises(ValueError, match="available datasets: .*cifar_fs"):
        load_split("imagenet21k", "train")
    with pytest.raises(ValueError, match=r"valid splits: \('train', 'val', 'test'\)"):
        load_split("cifar_fs", "validation")
    assert dataset_info("cub").image_size == 84


@pytest.mark.parametrize("module, sizes", [(cifar_fs, (64, 16, 20)), (miniimagenet, (64, 16, 20))])
def test_standard_class_lists_are_disjoint_and_complete(module, sizes):
    splits = [set(module.SPLIT_CLASSES[s]) for s in ("train", "val", "test")]
    assert tuple(len(s) for s in splits) == sizes
    assert len(splits[0] | splits[1] | splits[2]) == sum(sizes)


def test_cifar100_label_order():
    names = cifar_fs.CIFAR100_FINE_NAMES
    assert len(names) == 100 and names[0] == "apple" and names[48] == "motorcycle"
    assert names[99] == "worm" and names.index("sweet_pepper") == 83


def test_cub_split_is_disjoint_and_complete():
    parts = [set(cub.SPLIT_CLASS_INDICES[s]) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [100, 50, 50]
    assert set.union(*parts) == set(range(200)) and sum(len(p) for p in parts) == 200


def _cifar_names():
    return sorted(set(cifar_fs.TRAIN_CLASSES + cifar_fs.VAL_CLASSES + cifar_fs.TEST_CLASSES))


def _fake_cifar_pickles(per_class_train=2, per_class_test=1):
    rng = np.random.default_rng(0)
    names = _cifar_names()
    blobs = {"meta": {b"fine_label_names": [n.encode() for n in names]}}
    for part, per in (("train", per_class_train), ("test", per_class_test)):
        labels = np.repeat(np.arange(100), per)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = labels  # Red channel of pixel (0, 0) remembers the true class.
        blobs[part] = {b"data": data, b"fine_labels": labels.tolist()}
    return {k: pickle.dumps(v) for k, v in blobs.items()}


def _check_cifar_fs(data_dir):
    for split, n_classes in (("train", 64), ("val", 16), ("test", 20)):
        data = load_split("cifar_fs", split, data_dir=str(data_dir))
        assert data.images.shape == (n_classes * 3, 32, 32, 3) and data.num_classes == n_classes
        np.testing.assert_array_equal(np.bincount(data.labels), np.full(n_classes, 3))
        names = _cifar_names()
        # Each image is labelled with its own class: pixel (0, 0, red) holds the CIFAR-100 id.
        true_names = [names[v] for v in data.images[:, 0, 0, 0]]
        assert true_names == [data.class_names[label] for label in data.labels]
        assert data.mean == cifar_fs.CIFAR100_MEAN


def test_cifar_fs_from_python_folder_and_tarball(tmp_path):
    blobs = _fake_cifar_pickles()
    folder = tmp_path / "folder" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    _check_cifar_fs(tmp_path / "folder")
    tar_dir = tmp_path / "tar"
    tar_dir.mkdir()
    with tarfile.open(tar_dir / "cifar-100-python.tar.gz", "w:gz") as archive:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    _check_cifar_fs(tar_dir)


def test_cifar_fs_and_cub_from_tfds_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=150):
        splits = [load_split("cifar_fs", s, data_dir=str(tmp_path)) for s in ("train", "val", "test")]
        assert [s.num_classes for s in splits] == [64, 16, 20]
        assert sum(len(s.labels) for s in splits) == 300  # TFDS train + test, all kept.
        assert all(s.images.shape[1:] == (32, 32, 3) for s in splits)
        cub_splits = [load_split("cub", s, data_dir=str(tmp_path)) for s in ("train", "val", "test")]
        assert [s.num_classes for s in cub_splits] == [100, 50, 50]
        assert sum(len(s.labels) for s in cub_splits) == 300
        for s in cub_splits:
            assert s.images.shape[1:] == (84, 84, 3) and s.images.dtype == np.uint8
            assert s.labels.min() >= 0 and s.labels.max() < s.num_classes
            assert s.mean == cub.IMAGENET_MEAN


@pytest.mark.parametrize("name, needle", [("cifar_fs", "download_and_prepare"),
                                          ("cub", "download_and_prepare"),
                                          ("miniimagenet", "mini-imagenet-cache")])
def test_missing_data_says_where_and_how(tmp_path, name, needle):
    missing = tmp_path / "no_data_here"
    with pytest.raises(DataNotFoundError) as err:
        load_split(name, "train", data_dir=str(missing))
    assert str(missing) in str(err.value) and needle in str(err.value)


def test_miniimagenet_from_csv_folder(tmp_path):
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    for split, wnids in miniimagenet.SPLIT_CLASSES.items():
        with open(tmp_path / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for wnid in wnids:
                for i in range(2):
                    name = f"{wnid}{i:08d}.png"
                    size = 84 if i == 0 else 50  # A non-84 image gets resized.
                    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                        tmp_path / "images" / name)
                    writer.writerow([name, wnid])
    for split, n in (("train", 64), ("val", 16), ("test", 20)):
        data = load_split("miniimagenet", split, data_dir=str(tmp_path))
        assert data.images.shape == (2 * n, 84, 84, 3) and data.num_classes == n
        assert set(data.class_names) == set(miniimagenet.SPLIT_CLASSES[split])


def test_miniimagenet_from_pickle(tmp_path):
    wnids = miniimagenet.SPLIT_CLASSES["val"]
    images = np.arange(len(wnids) * 3, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, 84, 84, 3), np.uint8)
    class_dict = {w: [3 * i, 3 * i + 1, 3 * i + 2] for i, w in enumerate(wnids)}
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": images, "class_dict": class_dict}, f)
    data = load_split("miniimagenet", "val", data_dir=str(tmp_path))
    assert data.images.shape == (48, 84, 84, 3) and data.num_classes == 16
    for image, label in zip(data.images, data.labels):  # Images stay with their class.
        assert image[0, 0, 0] in class_dict[data.class_names[label]]


def _fake_split(name, n_classes, channels=3, mean=0.5):
    labels = np.repeat(np.arange(n_classes, dtype=np.int32), 2)
    return SplitData(images=np.zeros((len(labels), 8, 8, channels), np.uint8), labels=labels,
                     class_names=tuple(f"c{i}" for i in range(n_classes)),
                     mean=(mean,) * channels, std=(0.25,) * channels, name=name, split="train")


def test_combine_domains_offsets_and_round_trip():
    md = combine_domains([_fake_split("a", 3), _fake_split("b", 5, mean=0.1),
                          _fake_split("c", 2, channels=1)])
    assert md.class_offsets == (0, 3, 8) and md.num_classes_total == 10
    assert md.means == ((0.5,) * 3, (0.1,) * 3, (0.5,))  # Per-domain normalisation kept.
    seen = set()
    for d, domain in enumerate(md.domains):
        ids = md.global_labels(d)
        assert seen.isdisjoint(ids)
        seen |= set(ids.tolist())
        for local in range(domain.num_classes):
            assert md.local_label(md.global_label(d, local)) == (d, local)
    assert seen == set(range(10)) and md.global_label("b", 4) == 7
    assert len(md.class_names) == 10 and md.class_names[3] == "b/c0"
    with pytest.raises(ValueError):
        md.global_label("b", 5)
    with pytest.raises(ValueError, match="same split"):
        combine_domains([_fake_split("a", 2), SplitData(**{**_fake_split("b", 2).__dict__,
                                                           "split": "test"})])
