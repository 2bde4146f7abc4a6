"""Real-image evaluation data for a run: each domain's split at the meta-learner's resolution."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from free_jax import data as data_lib, evaluation, sharding
from free_jax.data.base import SplitData


@dataclasses.dataclass(frozen=True)
class EvalDomain:
    """One dataset's meta-val or meta-test split, resized for the meta-learner, with fixed episodes."""

    name: str
    images: jax.Array                 # uint8 (n, s, s, C) on device
    episodes: dict                    # shot -> EpisodeSet


def data_options(config, dataset: str) -> dict:
    """The run's loader options that apply to ``dataset`` (``free_jax.data.loader_options``)."""
    return data_lib.loader_options(dataset, config.data_options)


def resize_uint8(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 (n, H, W, C) images bilinearly resized to (n, side, side, C) (as they are if already that size)."""
    if images.shape[1] == side:
        return images
    out = [np.asarray(jax.image.resize(jnp.asarray(chunk, jnp.float32), (len(chunk), side, side, images.shape[3]),
                                       "bilinear")) for chunk in np.array_split(images, max(1, len(images) // 2048))]
    return np.clip(np.rint(np.concatenate(out)), 0, 255).astype(np.uint8)


def load_eval_domains(config, split: str, shots, num_episodes: int) -> list[EvalDomain]:
    """Loads ``split`` of every configured dataset and draws its fixed evaluation episodes."""
    domains = []
    for name in config.datasets:
        loaded: SplitData = data_lib.load_split(name, split, config.data_dir or None, **data_options(config, name))
        episodes = {shot: evaluation.make_episodes(loaded, num_episodes, config.way, shot, config.eval.query,
                                                   seed=config.eval.seed + 1000 * shot)
                    for shot in shots}
        images = jnp.asarray(resize_uint8(loaded.images, config.image_size))
        domains.append(EvalDomain(name, sharding.replicate(images, sharding.config_mesh(config)), episodes))
    return domains


def evaluate_domains(meta_learner, domains, shot: int, config,
                     progress: Callable[[str, int, int], None] | None = None) -> dict[str, evaluation.EvalResult]:
    """Per-domain results for ``shot``-shot episodes, plus "mean" (the mean over domains) if several.

    ``progress(domain, episodes_done, num_episodes)`` is called as each compiled chunk finishes."""
    mesh = sharding.config_mesh(config)       # episodes split over config.num_devices devices
    results = {d.name: evaluation.evaluate(meta_learner, d.images, d.episodes[shot], config.eval.steps,
                                           config.eval.lr, config.eval.chunk_size or None, config.strategy,
                                           image_shape=(config.image_size, config.image_size, d.images.shape[-1]),
                                           progress=None if progress is None else functools.partial(progress, d.name),
                                           mesh=mesh, inner_loop=config.eval.inner_loop)
               for d in domains}
    if len(results) > 1:
        accuracies = np.mean([r.accuracies for r in results.values()], axis=0)
        results["mean"] = evaluation.EvalResult(*evaluation.confidence_interval(accuracies), accuracies)
    return results


def headline(results: dict) -> evaluation.EvalResult:
    """The number model selection uses: the mean over domains, or the single domain."""
    return results.get("mean") or next(iter(results.values()))
