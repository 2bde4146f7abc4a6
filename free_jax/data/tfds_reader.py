"""Reads prepared TFDS datasets into numpy, without TensorFlow where the file format allows it.

TFDS random-access data sources (``as_data_source``) read ``array_record`` files with numpy
only. Datasets prepared with the default ``tfrecord`` format can be read only with TensorFlow
(``pip install 'free_jax[tfds]'``, ~1.4 GB); without it a clear error says so.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from free_jax.data.registry import DataNotFoundError

_PREPARE_HINT = (
    "Prepare it on a machine with internet access, e.g.\n"
    "  pip install 'free_jax[tfds]'\n"
    "  python -c \"import tensorflow_datasets as tfds; "
    "tfds.builder('{name}', data_dir='DIR', file_format='array_record').download_and_prepare()\"\n"
    "then copy DIR here and pass it as data_dir (--data_dir). The array_record format is read "
    "without TensorFlow; the default tfrecord format needs 'free_jax[tfds]' (TensorFlow).")


def read_tfds(name: str, splits: Iterable[str], data_dir: str | None,
              image_fn: Callable[[np.ndarray], np.ndarray] | None = None,
              keys: tuple[str, ...] = ("image", "label")) -> tuple[dict[str, np.ndarray], object]:
    """All examples of some splits of a TFDS dataset, concatenated.

    Args:
      name: TFDS name, e.g. ``"cifar100"``.
      splits: TFDS split names to read and concatenate, e.g. ``("train", "test")``.
      data_dir: TFDS data dir (None: TFDS's default, ``~/tensorflow_datasets``).
      image_fn: applied to each decoded uint8 image (e.g. a resize) before stacking.
      keys: features to return; ``"image"`` is stacked into (n, H, W, C) uint8.

    Returns:
      (arrays by key, the TFDS builder info).

    Raises:
      DataNotFoundError: not prepared under data_dir, or prepared as tfrecord without TF.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataNotFoundError(f"reading TFDS dataset {name!r} needs tensorflow-datasets: "
                                f"pip install 'free_jax[tfds]'") from err
    builder = tfds.builder(name, data_dir=data_dir)
    columns: dict[str, list] = {k: [] for k in keys}
    for split in splits:
        for example in _examples(tfds, builder, name, split):
            for key in keys:
                value = example[key]
                if key == "image" and image_fn is not None:
                    value = image_fn(np.asarray(value))
                columns[key].append(value.decode() if isinstance(value, bytes) else value)
    arrays = {k: (np.stack(v).astype(np.uint8) if k == "image" else np.asarray(v))
              for k, v in columns.items()}
    return arrays, builder.info


def _examples(tfds, builder, name: str, split: str):
    try:
        source = builder.as_data_source(split=split)
        return (source[i] for i in range(len(source)))
    except Exception as err:  # TFDS raises several types here; sort them out below.
        if not builder.is_prepared():
            raise DataNotFoundError(
                f"TFDS dataset {name!r} was not found in {builder.data_dir!r} "
                f"(searched data_dir={str(builder.data_dir_root)!r}). "
                + _PREPARE_HINT.format(name=name)) from err
        try:
            import tensorflow  # noqa: F401  # Only to read tfrecord files.
        except ImportError:
            raise DataNotFoundError(
                f"TFDS dataset {name!r} in {builder.data_dir!r} is stored as tfrecord, which only "
                f"TensorFlow reads: pip install 'free_jax[tfds]', or re-prepare it with "
                f"file_format='array_record'. ({type(err).__name__}: {err})") from err
        return tfds.as_numpy(builder.as_dataset(split=split))
