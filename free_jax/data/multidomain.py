"""Several datasets as one class space, for the multi-domain (MD) scenario.

Each domain keeps its own images, normalisation and native size; its local labels
``0..n_d-1`` map to global ids ``class_offsets[d] + label``, so classes of different
domains never share an id.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from free_jax.data.base import SplitData


@dataclasses.dataclass(frozen=True)
class MultiDomainSplit:
    """One meta-split of several domains with disjoint global class ids.

    Attributes:
      domains: the per-domain splits, each with its own mean/std and image shape.
      class_offsets: global id of domain ``d``'s local class ``c`` is ``class_offsets[d] + c``.
      num_classes_total: number of global classes (sum over domains).
    """

    domains: tuple[SplitData, ...]
    class_offsets: tuple[int, ...]
    num_classes_total: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains)

    @property
    def means(self) -> tuple[tuple[float, ...], ...]:
        return tuple(d.mean for d in self.domains)

    @property
    def stds(self) -> tuple[tuple[float, ...], ...]:
        return tuple(d.std for d in self.domains)

    def domain_index(self, domain: int | str) -> int:
        """Index of a domain given by index or dataset name."""
        if isinstance(domain, str):
            if domain not in self.names:
                raise ValueError(f"no domain {domain!r}; domains: {self.names}")
            return self.names.index(domain)
        if not 0 <= domain < len(self.domains):
            raise ValueError(f"domain index {domain} out of range 0..{len(self.domains) - 1}")
        return int(domain)

    def global_label(self, domain: int | str, local_label) -> Any:
        """Global class id(s) of local label(s) of a domain (int or array)."""
        d = self.domain_index(domain)
        local = np.asarray(local_label)
        if np.any(local < 0) or np.any(local >= self.domains[d].num_classes):
            raise ValueError(f"local label out of range for domain {self.names[d]!r}")
        out = local + self.class_offsets[d]
        return int(out) if out.ndim == 0 else out

    def local_label(self, global_label: int) -> tuple[int, int]:
        """(domain index, local label) of a global class id."""
        if not 0 <= global_label < self.num_classes_total:
            raise ValueError(f"global label {global_label} out of range 0..{self.num_classes_total - 1}")
        d = int(np.searchsorted(np.asarray(self.class_offsets), global_label, side="right") - 1)
        return d, int(global_label - self.class_offsets[d])

    def global_labels(self, domain: int | str) -> np.ndarray:
        """Global ids of all examples of a domain, int32 (n_d,)."""
        d = self.domain_index(domain)
        return (self.domains[d].labels + self.class_offsets[d]).astype(np.int32)

    @property
    def class_names(self) -> tuple[str, ...]:
        """``"<dataset>/<class name>"`` for every global id, in id order."""
        return tuple(f"{d.name}/{n}" for d in self.domains for n in d.class_names)


def combine_domains(splits: Sequence[SplitData]) -> MultiDomainSplit:
    """Combines same-split data of several datasets into one disjoint global class space."""
    splits = tuple(splits)
    if not splits:
        raise ValueError("combine_domains needs at least one SplitData")
    if len({s.split for s in splits}) != 1:
        raise ValueError(f"all domains must be the same split, got {[s.split for s in splits]}")
    if len({s.name for s in splits}) != len(splits):
        raise ValueError(f"each dataset may appear once, got {[s.name for s in splits]}")
    offsets = tuple(int(x) for x in np.cumsum([0] + [s.num_classes for s in splits])[:-1])
    return MultiDomainSplit(domains=splits, class_offsets=offsets,
                            num_classes_total=int(sum(s.num_classes for s in splits)))


def load_multidomain(names: Sequence[str], split: str, data_dir: str | None = None,
                     options: dict[str, dict[str, Any]] | None = None) -> MultiDomainSplit:
    """Loads ``split`` of each named dataset and combines them.

    Args:
      names: registry names, e.g. ``("glyphs", "glyphs_outline")`` (offline) or
        ``("cifar_fs", "miniimagenet", "cub")``.
      split: "train", "val" or "test".
      data_dir: passed to every loader (one root holding all datasets).
      options: per-dataset loader options, e.g. ``{"glyphs": {"image_size": 28}}``.
    """
    from free_jax.data.registry import load_split
    options = options or {}
    return combine_domains([load_split(n, split, data_dir, **options.get(n, {})) for n in names])
