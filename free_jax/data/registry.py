"""The dataset registry behind ``load_split``: names, loaders, native sizes, split sizes."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Mapping

from free_jax.data.base import SplitData

SPLITS = ("train", "val", "test")


class DataNotFoundError(FileNotFoundError):
    """A real dataset is missing or unprepared; the message says where we looked and what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about a dataset without loading it.

    Attributes:
      name: registry name.
      loader: ``"module:function"`` called as ``function(split, data_dir, **options)``;
        imported lazily so that e.g. TFDS is imported only when a TFDS dataset is loaded.
      image_size, channels: native image shape (square) of the default options.
      classes_per_split: number of classes in train/val/test (None where it depends on options).
      description: one line for listings and errors.
    """

    name: str
    loader: str
    image_size: int
    channels: int
    classes_per_split: Mapping[str, int] | None
    description: str

    def _function(self) -> Callable[..., SplitData]:
        module_name, function_name = self.loader.split(":")
        return getattr(importlib.import_module(module_name), function_name)

    def load(self, split: str, data_dir: str | None, **options: Any) -> SplitData:
        return self._function()(split, data_dir, **options)

    def option_names(self) -> tuple[str, ...]:
        """The loader's options: its parameters after ``split`` and ``data_dir``."""
        parameters = list(inspect.signature(self._function()).parameters.values())[2:]
        return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


_REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> None:
    """Adds (or replaces) a dataset in the registry."""
    _REGISTRY[info.name] = info


def available_datasets() -> tuple[str, ...]:
    """Names ``load_split`` accepts, sorted."""
    return tuple(sorted(_REGISTRY))


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name``; a clear error listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available datasets: {available_datasets()}")
    return _REGISTRY[name]


def loader_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of ``options`` that are set (not None) for dataset ``name``'s loader.

    One ``data_options`` mapping serves every dataset of a run; an option set there that the
    loader does not take is an error, never silently dropped (e.g. ``image_size`` for CIFAR-FS,
    whose images are 32 px). Unset options (None, the run configs' placeholders) leave the
    loader's defaults.
    """
    if options is not None and hasattr(options, "to_dict"):
        options = options.to_dict()
    given = {key: value for key, value in dict(options or {}).items() if value is not None}
    accepted = dataset_info(name).option_names()
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option {unknown} (data_options = {given}); its loader's "
                         f"options are {list(accepted) or 'none'}. Leave the option unset for this dataset "
                         "(--config.data_options.<name>=None) or pick a dataset that takes it.")
    return given


def load_split(name: str, split: str, data_dir: str | None = None, **options: Any) -> SplitData:
    """Loads one meta-split of a registered dataset.

    Args:
      name: a name from ``available_datasets()``, e.g. ``"glyphs"`` or ``"cifar_fs"``.
      split: ``"train"``, ``"val"`` or ``"test"`` (meta-train / meta-val / meta-test classes,
        disjoint).
      data_dir: where the real dataset lives (TFDS data dir, or the folder with the files);
        for generated datasets, the cache root (default ``$FREE_JAX_CACHE_DIR`` or
        ``~/.cache/free_jax``).
      **options: dataset-specific, e.g. ``image_size``, ``channels``, ``seed``,
        ``renderings_per_class`` for the glyph sets.

    Returns:
      SplitData with uint8 (n, H, W, C) images, int32 labels in ``0..num_classes-1``, class
      names and the dataset's per-channel mean/std.

    Raises:
      ValueError: unknown dataset or split (the message lists the valid ones).
      DataNotFoundError: a real dataset is missing; the message says how to prepare it.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid splits: {SPLITS}")
    return info.load(split, data_dir, **options)


for _info in (
    DatasetInfo("glyphs", "free_jax.data.glyphs:load_glyphs", 32, 3, None,
                "embedded Omniglot-like characters of 11 scripts rendered from installed fonts"),
    DatasetInfo("glyphs_outline", "free_jax.data.glyphs:load_glyphs_outline", 32, 3, None,
                "the glyph classes as hollow strokes on textured backgrounds (second domain)"),
    DatasetInfo("cifar_fs", "free_jax.data.cifar_fs:load_cifar_fs", 32, 3,
                {"train": 64, "val": 16, "test": 20},
                "CIFAR-FS (Bertinetto et al. 2019) from TFDS cifar100 or cifar-100-python"),
    DatasetInfo("cub", "free_jax.data.cub:load_cub", 84, 3, {"train": 100, "val": 50, "test": 50},
                "CUB-200-2011 from TFDS caltech_birds2011, resized to 84x84"),
    DatasetInfo("miniimagenet", "free_jax.data.miniimagenet:load_miniimagenet", 84, 3,
                {"train": 64, "val": 16, "test": 20},
                "MiniImageNet (Ravi & Larochelle split) from user-supplied images+CSVs or pickles"),
):
    register(_info)
