"""N-way K-shot episode sampling from class-indexed arrays, with jax.random, on device.

A split's images stay one uint8 device array (n, H, W, C); an episode is only a small array of
indices into it, so 600 fixed evaluation episodes cost a few hundred KiB. The same class-slot
sampler serves the memory bank (``free_jax.memory``), whose rows are classes too.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from free_jax.data.task import Task
from free_jax.normalization import to_unit_float


class ClassIndex(NamedTuple):
    """Where each class's images are: ``table[c, j]`` for ``j < counts[c]`` (rest is padding)."""

    table: jnp.ndarray   # (K, max_per_class) int32 indices into the image array
    counts: jnp.ndarray  # (K,) int32


def build_class_index(labels: np.ndarray, num_classes: int | None = None) -> ClassIndex:
    """Host-side: the class → image-index table of integer ``labels`` (n,)."""
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    width = max(len(m) for m in members)
    table = np.zeros((num_classes, width), np.int32)
    for c, m in enumerate(members):
        table[c, : len(m)] = m
    return ClassIndex(jnp.asarray(table), jnp.asarray([len(m) for m in members], jnp.int32))


def sample_class_slots(key: jax.Array, counts: jnp.ndarray, max_slots: int, way: int, per_class: int):
    """Draws ``way`` distinct classes among those with ``counts >= per_class``, then ``per_class``
    distinct slots ``< counts[c]`` in each. jit-compatible; callers check eligibility on the host
    (``num_eligible``) because a traced function cannot raise.

    Returns:
      classes (way,) int32 and slots (way, per_class) int32.
    """
    class_key, slot_key = jax.random.split(key)
    eligible = counts >= per_class
    classes = jax.random.choice(class_key, counts.shape[0], (way,), replace=False,
                                p=eligible / jnp.maximum(eligible.sum(), 1))
    # Random priorities; slots beyond a class's count sort last, so the first per_class are valid.
    priorities = jax.random.uniform(slot_key, (way, max_slots))
    priorities = jnp.where(jnp.arange(max_slots)[None, :] < counts[classes][:, None], priorities, 2.0)
    slots = jnp.argsort(priorities, axis=1)[:, :per_class]
    return classes.astype(jnp.int32), slots.astype(jnp.int32)


def num_eligible(counts, per_class: int) -> int:
    """Host-side count of classes holding at least ``per_class`` items."""
    return int(np.sum(np.asarray(counts) >= per_class))


def check_enough_classes(counts, way: int, per_class: int, what: str) -> None:
    """Raises ValueError when fewer than ``way`` classes hold ``per_class`` items."""
    eligible = num_eligible(counts, per_class)
    if eligible < way:
        raise ValueError(f"{what}: only {eligible} classes hold at least {per_class} images, "
                         f"but a {way}-way task needs {way}. Use fewer shots/queries/ways or more data.")


def check_episode_shape(num_episodes: int, way: int, shot: int, query: int) -> None:
    """Raises ValueError naming the first of the episode arguments out of range."""
    for name, value, minimum in (("num_episodes", num_episodes, 1), ("way", way, 2), ("shot", shot, 1),
                                 ("query", query, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name}={value!r} is invalid: episodes need an integer {name} ≥ {minimum}")


def sample_episode_indices(key: jax.Array, class_index: ClassIndex, num_episodes: int, way: int,
                           shot: int, query: int) -> jnp.ndarray:
    """(num_episodes, way, shot + query) image indices; episode classes are relabelled 0..way−1
    in the order drawn, the first ``shot`` of each row are support, the rest query.

    Raises:
      ValueError: an argument is out of range, or fewer than ``way`` classes hold ``shot + query``
        images.
    """
    check_episode_shape(num_episodes, way, shot, query)
    check_enough_classes(class_index.counts, way, shot + query,
                         f"episode sampling (shot={shot} + query={query} images per class)")
    return _sample_episodes(key, class_index, num_episodes=int(num_episodes), way=int(way), per_class=shot + query)


@functools.partial(jax.jit, static_argnames=("num_episodes", "way", "per_class"))
def _sample_episodes(key: jax.Array, class_index: ClassIndex, *, num_episodes: int, way: int, per_class: int):
    """``sample_episode_indices`` after its checks, one jitted program (op by op: dozens of tiny programs)."""
    max_slots = class_index.table.shape[1]

    def one(episode_key):
        classes, slots = sample_class_slots(episode_key, class_index.counts, max_slots, way, per_class)
        return class_index.table[classes[:, None], slots]

    return jax.vmap(one)(jax.random.split(key, num_episodes))


def episode_tasks(picked: jnp.ndarray, shot: int) -> Task:
    """Stacked ``Task``s from the uint8 images of episodes, ``picked`` (E, N, K+Q, H, W, C) — e.g.
    ``images[episodes.indices]``: images become float32 in [0, 1]; labels are class-major,
    support_y = [0]*K + [1]*K + ... (``split_support_query``)."""
    return split_support_query(to_unit_float(picked), shot)


def split_support_query(picked: jnp.ndarray, shot: int) -> Task:
    """Stacked ``Task``s from class-major images ``picked`` (E, N, K+Q, H, W, C): the first K
    of each class are support, the rest query; labels 0..N−1 in class order."""
    num_episodes, way, per_class = picked.shape[:3]
    query = per_class - shot
    image_shape = picked.shape[3:]
    support_x = picked[:, :, :shot].reshape(num_episodes, way * shot, *image_shape)
    query_x = picked[:, :, shot:].reshape(num_episodes, way * query, *image_shape)
    support_y = jnp.broadcast_to(jnp.repeat(jnp.arange(way), shot), (num_episodes, way * shot))
    query_y = jnp.broadcast_to(jnp.repeat(jnp.arange(way), query), (num_episodes, way * query))
    return Task(support_x, support_y.astype(jnp.int32), query_x, query_y.astype(jnp.int32))
