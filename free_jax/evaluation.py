"""Episodic evaluation (docs/algorithm.md §2.4): fixed episodes, 10 SGD steps at lr 0.01, mean ± 95 % CI.

Episodes are drawn once from a seed (``make_episodes``) and reused for every evaluation, so
two checkpoints are compared on exactly the same tasks. BatchNorm uses the current batch's
statistics during adaptation and scoring (transductive, as reference MAML).

For E episodes with query accuracies a_e, the result is mean(a) ± 1.96 · std(a) / √E
(population std, as numpy's default).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import numpy as np

from free_jax import sharding, vectorize
from free_jax.data.base import SplitData
from free_jax.data.episodes import build_class_index, check_episode_shape, episode_tasks, sample_episode_indices
from free_jax.meta import maml
from free_jax.models.learner import MetaLearner

TRANSDUCTIVE_NOTE = "BatchNorm uses each batch's statistics during adaptation and scoring (transductive)"


@dataclasses.dataclass(frozen=True)
class EpisodeSet:
    """Fixed evaluation episodes of one split: image indices (E, way, shot + query)."""

    indices: np.ndarray
    way: int
    shot: int
    query: int
    seed: int

    @property
    def num_episodes(self) -> int:
        return int(self.indices.shape[0])


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Mean query accuracy and its 95 % confidence half-width, both in percent."""

    mean: float
    ci95: float
    accuracies: np.ndarray

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f} %"


def confidence_interval(accuracies) -> tuple[float, float]:
    """(mean, 1.96 · std / √E) of per-episode accuracies, in the accuracies' units."""
    accuracies = np.asarray(accuracies, np.float64)
    return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(len(accuracies)))


def make_episodes(split: SplitData, num_episodes: int = 600, way: int = 5, shot: int = 1,
                  query: int = 15, seed: int = 0) -> EpisodeSet:
    """Draws the split's evaluation episodes once; same seed ⇒ same episodes.

    Raises:
      ValueError: an argument is out of range (way < 2, shot, query or num_episodes < 1), a label
        is outside 0 .. num_classes − 1, or fewer than ``way`` classes hold ``shot + query`` images.
    """
    check_episode_shape(num_episodes, way, shot, query)
    labels = np.asarray(split.labels)
    if labels.size and (labels.min() < 0 or labels.max() >= split.num_classes):
        raise ValueError(f"split.labels run from {labels.min()} to {labels.max()}, but split {split.name!r} has "
                         f"{split.num_classes} class names: labels must lie in 0 .. {split.num_classes - 1}")
    class_index = build_class_index(labels, split.num_classes)
    indices = sample_episode_indices(jax.random.key(seed), class_index, num_episodes, way, shot, query)
    return EpisodeSet(np.asarray(indices), way, shot, query, seed)


@jax.jit
def _gather_chunk(images, indices):
    """The uint8 images of a chunk's episodes (E, way, shot + query, H, W, C): a small program per
    split size, so that the adaptation program below depends only on the episodes' shape."""
    return images[indices]


# ``lr`` is traced (one program serves every learning rate: a tuning grid of lrs compiles once per
# step count); ``steps`` is static (it sets the unrolled loop's length). The episodes arrive
# gathered (``_gather_chunk``): one program serves every split and domain of a given episode shape.
@functools.partial(jax.jit, static_argnames=("shot", "steps", "strategy", "mesh", "inner_loop"))
def _chunk_accuracies(meta_learner: MetaLearner, picked, shot, steps, lr, strategy, mesh, inner_loop):
    def body(local_picked, mask, meta_learner):
        del mask  # padded episodes' accuracies are dropped by split_over_tasks
        tasks = episode_tasks(local_picked, shot)
        return maml.adapted_query_accuracy(meta_learner.logits_fn(), meta_learner.params, tasks,
                                           steps, lr, inner_loop, strategy=strategy), ()

    return sharding.split_over_tasks(body, picked, mesh, meta_learner)[0]


def default_chunk_size() -> int:
    """Episodes per compiled call: small on CPU (the loop is unrolled), large on accelerators."""
    return 4 if jax.default_backend() == "cpu" else 100


def _check_eval_inputs(meta_learner, images, episodes: EpisodeSet, steps, chunk_size, image_shape) -> None:
    shape, dtype = tuple(np.shape(images)), np.dtype(images.dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"images have dtype {dtype}; evaluate expects the split's uint8 pixels in 0..255 "
                         "(it scales them to [0, 1] itself). Pass the raw images, not normalised ones")
    if len(shape) != 4:
        raise ValueError(f"images have shape {shape}; evaluate expects (n, H, W, C)")
    channels = int(np.shape(meta_learner.mean)[-1])
    if shape[3] != channels or (image_shape is not None and shape[1:] != tuple(image_shape)):
        wanted = tuple(image_shape) if image_shape is not None else f"(H, W, {channels})"
        raise ValueError(f"images are {shape[1:]} (H, W, C) but the meta-learner takes {wanted}; "
                         "resize the images to the learner's resolution first")
    if episodes.num_episodes < 1:
        raise ValueError("episodes holds no episode; draw num_episodes ≥ 1 with make_episodes")
    largest = int(np.max(episodes.indices))
    if largest >= shape[0]:
        raise ValueError(f"the episodes address image {largest}, but only {shape[0]} images were given: pass the "
                         "images of the split the episodes were drawn from")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps={steps!r} is invalid: an integer ≥ 0")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} is invalid: an integer ≥ 1, or None for the backend default")


def evaluate(meta_learner: MetaLearner, images, episodes: EpisodeSet, steps: int = 10,
             lr: float = 0.01, chunk_size: int | None = None,
             strategy: vectorize.Strategy = "auto", image_shape=None,
             progress: Callable[[int, int], None] | None = None, mesh=None,
             inner_loop: maml.InnerLoop = "unroll") -> EvalResult:
    """Adapts ``meta_learner`` to every episode and scores its query set.

    Args:
      images: the split's uint8 images (n, H, W, C), ideally already on device.
      chunk_size: episodes per compiled call; the last chunk is padded (results dropped) so
        every call reuses one compiled program.
      image_shape: the (H, W, C) the meta-learner was built for; if given, ``images`` must have it
        (a Conv4 accepts several sizes, so another size would score near chance, silently).
      progress: called on the host as ``progress(episodes_done, num_episodes)`` as each chunk's
        results arrive (chunks are still dispatched ahead, so waiting for them costs nothing).
      mesh: a ``tasks`` mesh (``free_jax.sharding``): each chunk's episodes are split over its
        devices (the chunk size is rounded up to a multiple of the device count); None = one device.
      inner_loop: "unroll" (the adaptation steps unrolled: faster per episode) or "scan" (one
        step body in a loop: compiles 3-10× faster, 10-20 % slower per episode on CPU).

    Raises:
      ValueError: images that are not integer (uint8) pixels, of another channel count than the
        learner's normalisation or another shape than ``image_shape``, fewer images than the
        episodes address, steps < 0 / chunk_size < 1, or an unknown ``inner_loop``.
    """
    _check_eval_inputs(meta_learner, images, episodes, steps, chunk_size, image_shape)
    if inner_loop not in maml.INNER_LOOPS:
        raise ValueError(f"inner_loop={inner_loop!r} is invalid: one of {maml.INNER_LOOPS}")
    chunk_size = min(chunk_size or default_chunk_size(), episodes.num_episodes)
    devices = sharding.mesh_size(mesh)
    chunk_size = -(-chunk_size // devices) * devices     # whole episodes per device
    # Committed to the device(s) whatever the origin (a fresh init is uncommitted, a restored
    # checkpoint committed; numpy or device images): jit keys its programs on that, so all share one.
    images, meta_learner = sharding.replicate((images, meta_learner), mesh)
    indices = episodes.indices
    pad = (-len(indices)) % chunk_size
    if pad:
        indices = np.concatenate([indices, indices[np.arange(pad) % len(indices)]])
    place = lambda chunk: sharding.replicate(chunk, mesh)
    lr = float(lr)       # a weakly typed scalar: the learner's dtype (float32, or float64 under x64)
    chunks = [_chunk_accuracies(meta_learner, _gather_chunk(images, place(indices[i:i + chunk_size])),
                                episodes.shot, steps, lr, strategy, mesh, inner_loop)
              for i in range(0, len(indices), chunk_size)]  # dispatched asynchronously
    done = []
    for chunk in chunks:
        done.append(np.asarray(chunk))
        if progress is not None:
            progress(min(len(done) * chunk_size, episodes.num_episodes), episodes.num_episodes)
    accuracies = 100.0 * np.concatenate(done)[: episodes.num_episodes]
    mean, ci95 = confidence_interval(accuracies)
    return EvalResult(mean, ci95, accuracies)
