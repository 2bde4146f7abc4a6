"""The device-resident memory bank of recovered images (docs/algorithm.md §2.2).

One ring buffer of ``capacity`` images per global class id, stored as one array
(num_classes, capacity, H, W, C) so ``add`` and ``sample_tasks`` are pure, jit-able functions
and the bank is an ordinary pytree in the training state (checkpointed with it).

Storage precision. The default ``uint8`` stores round(255·x): every pixel is quantised to the
nearest of 256 levels, an absolute error ≤ 1/510 ≈ 0.002 in [0, 1] — exactly what the released
code loses by writing PNGs — at a quarter of float32's memory (400 × 100 classes × 32·32·3 is
123 MB in uint8, 492 MB in float32). ``bfloat16`` halves float32 and keeps 8 significant bits
(relative error ≤ 2⁻⁹, i.e. ≤ 0.002 near 1, finer near 0); ``float32`` is lossless.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from free_jax.data.episodes import sample_class_slots, split_support_query


@struct.dataclass
class MemoryBank:
    """Ring buffers of recovered images keyed by global class id.

    Attributes:
      images: (num_classes, capacity, H, W, C) in the storage dtype (uint8: round(255·x)).
      counts: (num_classes,) int32, images ever written per class; slot i of class c holds a
        valid image iff i < min(counts[c], capacity); the next write goes to counts[c] mod capacity.
    """

    images: jnp.ndarray
    counts: jnp.ndarray

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[2:])

    def sizes(self) -> jnp.ndarray:
        """(num_classes,) number of valid images per class, min(counts, capacity)."""
        return jnp.minimum(self.counts, self.capacity)


def create_bank(num_classes: int, capacity: int = 400, image_shape=(32, 32, 3),
                dtype=jnp.uint8) -> MemoryBank:
    """An empty bank; ``dtype`` is uint8 (default), bfloat16 or float32 (see module docstring)."""
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.uint8), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
        raise ValueError(f"bank dtype must be uint8, bfloat16 or float32, got {dtype}")
    return MemoryBank(images=jnp.zeros((num_classes, capacity, *image_shape), dtype),
                      counts=jnp.zeros((num_classes,), jnp.int32))


def _encode(images01: jnp.ndarray, dtype) -> jnp.ndarray:
    if dtype == jnp.uint8:
        return jnp.round(jnp.clip(images01, 0.0, 1.0) * 255.0).astype(jnp.uint8)
    return images01.astype(dtype)


def _decode(stored: jnp.ndarray) -> jnp.ndarray:
    if stored.dtype == jnp.uint8:
        return stored.astype(jnp.float32) / 255.0
    return stored.astype(jnp.float32)


def add(bank: MemoryBank, images01: jnp.ndarray, global_labels: jnp.ndarray) -> MemoryBank:
    """Writes images into their classes' ring buffers, oldest overwritten first.

    Image i of class c, the r-th image of class c in this call (in array order), goes to slot
    (counts[c] + r) mod capacity. When one call brings n_c > capacity images of class c, only
    its last ``capacity`` are written (as if written one by one). Labels outside
    0..num_classes-1 are dropped (no check inside jit).

    Args:
      bank: the bank. images01: (M, H, W, C) in [0, 1]. global_labels: int (M,).

    Returns:
      The new bank (the input is not modified).
    """
    labels = global_labels.astype(jnp.int32)
    num = labels.shape[0]
    same = labels[:, None] == labels[None, :]                               # (M, M)
    order = jnp.arange(num)
    rank = jnp.sum(same & (order[None, :] < order[:, None]), axis=1)        # earlier same-class
    per_class = jnp.sum(same, axis=1)                                       # n_c of own class
    keep = rank >= per_class - bank.capacity                                # last `capacity` only
    slots = (bank.counts[jnp.clip(labels, 0, bank.num_classes - 1)] + rank) % bank.capacity
    in_range = (labels >= 0) & (labels < bank.num_classes)
    rows = jnp.where(keep & in_range, labels, bank.num_classes)             # num_classes → dropped
    images = bank.images.at[rows, slots].set(_encode(images01, bank.images.dtype), mode="drop")
    counts = bank.counts + jnp.sum(jax.nn.one_hot(labels, bank.num_classes, dtype=jnp.int32), axis=0)
    return MemoryBank(images=images, counts=counts)


def eligible_classes(bank: MemoryBank, min_images: int) -> np.ndarray:
    """Host-side: the global class ids holding at least ``min_images`` images."""
    return np.flatnonzero(np.asarray(bank.sizes()) >= min_images)


def check_can_sample(bank: MemoryBank, way: int, shot: int, query: int) -> None:
    """Host-side guard for ``sample_tasks``.

    Raises:
      ValueError: fewer than ``way`` classes hold ``shot + query`` images (saying how many do).
    """
    needed = shot + query
    if needed > bank.capacity:
        raise ValueError(f"a task needs {needed} images per class but the bank holds at most "
                         f"{bank.capacity} per class")
    eligible = eligible_classes(bank, needed)
    if len(eligible) < way:
        raise ValueError(f"memory bank: only {len(eligible)} classes hold >= {needed} images "
                         f"(shot {shot} + query {query}); a {way}-way task needs {way} such classes")


def sample_tasks(bank: MemoryBank, key: jax.Array, n_tasks: int, way: int, shot: int, query: int):
    """Samples replay tasks: ``way`` distinct eligible classes, distinct images within a class.

    A class is eligible when it holds ≥ shot + query images; classes are drawn uniformly among
    the eligible ones without replacement (classes of different teachers mix) and relabelled
    0..way-1 in draw order; each class gives shot + query distinct images, the first ``shot``
    for support. Jit-able (``way``, ``shot``, ``query``, ``n_tasks`` static). Inside jit it
    cannot check the counts: call ``check_can_sample`` on the host first (with too few eligible
    classes the draw would include ineligible ones).

    Raises:
      ValueError: shot + query exceeds the bank's capacity (a static shape, checked at trace time).

    Returns:
      support_x (n_tasks, way·shot, H, W, C) float32 in [0, 1], support_y (n_tasks, way·shot)
      int32, query_x (n_tasks, way·query, H, W, C), query_y (n_tasks, way·query); labels are
      class-major: [0]*shot + [1]*shot + ….
    """
    return sample_tasks_with_keys(bank, jax.random.split(key, n_tasks), way, shot, query)


def sample_tasks_with_keys(bank: MemoryBank, task_keys: jax.Array, way: int, shot: int, query: int):
    """``sample_tasks`` with task i drawn from ``task_keys[i]`` (n_tasks keys): a device given a
    share of a meta-batch's keys samples exactly its share of the tasks (``free_jax.sharding``)."""
    if shot + query > bank.capacity:   # static shapes: checkable here, even under jit
        raise ValueError(f"a task needs shot + query = {shot + query} images per class but the bank holds "
                         f"at most {bank.capacity} per class (capacity); sampling would draw empty slots. "
                         "Create the bank with a larger capacity or lower shot/query.")
    sizes = bank.sizes()

    def one_task(task_key):
        classes, slots = sample_class_slots(task_key, sizes, bank.capacity, way, shot + query)
        return bank.images[classes[:, None], slots]                          # (way, S+Q, H, W, C)

    picked = _decode(jax.vmap(one_task)(task_keys))
    support_x, support_y, query_x, query_y = split_support_query(picked, shot)
    return support_x, support_y, query_x, query_y
