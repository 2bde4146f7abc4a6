"""Datasets behind one API: ``load_split(name, split, data_dir=None, **options) -> SplitData``.

Registered datasets (``available_datasets()``):
  * ``glyphs`` (default, offline): Omniglot-like characters of 11 scripts rendered from
    installed fonts, split by alphabet; ``glyphs_outline``: the same classes drawn hollow on
    textures (a second offline domain);
  * ``cifar_fs``, ``cub``, ``miniimagenet``: the paper's datasets, for users who have them.
Multi-domain: ``combine_domains`` / ``load_multidomain`` give disjoint global class ids.
Episode sampling lives in ``free_jax.data.episodes``.
"""
from free_jax.data.base import SplitData
from free_jax.data.multidomain import MultiDomainSplit, combine_domains, load_multidomain
from free_jax.data.registry import (
    SPLITS,
    DataNotFoundError,
    DatasetInfo,
    available_datasets,
    dataset_info,
    load_split,
    loader_options,
    register,
)

__all__ = [
    "SPLITS",
    "DataNotFoundError",
    "DatasetInfo",
    "MultiDomainSplit",
    "SplitData",
    "available_datasets",
    "combine_domains",
    "dataset_info",
    "load_multidomain",
    "load_split",
    "loader_options",
    "register",
]
