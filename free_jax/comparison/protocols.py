"""The two evaluation protocols of a comparison (docs/algorithm.md §2.4), on episodes shared by every row.

- *paper*: adapt from θ with ``config.eval.steps`` SGD steps at ``config.eval.lr`` (10 at 0.01).
- *tuned*: the test-time inner lr and step count are chosen per meta-learner on meta-*validation*
  episodes from a small grid (lrs × steps), then frozen for meta-test. Meta-test episodes never
  enter the choice: ``tune`` sees only the validation domains.

Episodes are drawn once per (split, shot) by ``load_episodes`` (``evaldata.load_eval_domains``:
the seed is ``config.eval.seed`` + 1000 · shot, never the run's seed), and every row is scored on
the same ``EvalDomain`` objects; ``episodes_digest`` names them so that rows can be checked to
share them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools

import numpy as np

from free_jax.training import evaldata


@dataclasses.dataclass(frozen=True)
class Setting:
    """A test-time adaptation: ``steps`` SGD steps at inner lr ``lr``."""

    lr: float
    steps: int

    def as_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps}


def paper_setting(config) -> Setting:
    """The paper's protocol: ``config.eval.steps`` steps at ``config.eval.lr``."""
    return Setting(float(config.eval.lr), int(config.eval.steps))


def grid_settings(lrs, steps) -> list[Setting]:
    """The tuned protocol's grid, in the order ties are broken (earlier wins): lr-major."""
    grid = [Setting(float(lr), int(n)) for lr, n in itertools.product(lrs, steps)]
    if not grid:
        raise ValueError("the tuning grid is empty: give at least one lr and one step count")
    if any(s.lr <= 0 or s.steps < 0 for s in grid):
        raise ValueError(f"tuning grid {grid}: every lr must be > 0 and every step count ≥ 0")
    return grid


def with_setting(config, setting: Setting):
    """A copy of ``config`` whose evaluation adapts with ``setting``."""
    copy = config.copy_and_resolve_references()
    copy.eval.lr, copy.eval.steps = setting.lr, setting.steps
    return copy


def load_episodes(config, split: str, shot: int, num_episodes: int, datasets=None) -> list[evaldata.EvalDomain]:
    """The fixed ``shot``-shot episodes of ``split`` for ``datasets`` (default: the config's)."""
    if datasets is not None:
        config = config.copy_and_resolve_references()
        config.datasets = tuple(datasets)
    return evaldata.load_eval_domains(config, split, (shot,), num_episodes)


def episodes_digest(domains, shot: int) -> str:
    """A short hash of the episodes (domain names and image indices): equal ⇔ same episodes."""
    digest = hashlib.sha256()
    for domain in domains:
        episodes = domain.episodes[shot]
        digest.update(f"{domain.name}/{episodes.way}/{episodes.shot}/{episodes.query}/{episodes.seed}".encode())
        digest.update(np.ascontiguousarray(episodes.indices, np.int64).tobytes())
    return digest.hexdigest()[:16]


def score(meta_learner, domains, shot: int, config, setting: Setting):
    """``EvalResult`` of ``meta_learner`` (the mean over domains if several) under ``setting``."""
    return evaldata.headline(evaldata.evaluate_domains(meta_learner, domains, shot, with_setting(config, setting)))


def choose(results: list[tuple[Setting, float]]) -> Setting:
    """The setting of the highest meta-validation mean; ties go to the earlier grid entry."""
    best_setting, best_mean = results[0]
    for setting, mean in results[1:]:
        if mean > best_mean:
            best_setting, best_mean = setting, mean
    return best_setting


def tune(meta_learner, val_domains, shot: int, config, grid: list[Setting]) -> tuple[Setting, list[dict]]:
    """Scores ``meta_learner`` on the meta-validation episodes at every grid setting and picks one.

    Returns (chosen setting, one ``{"lr", "steps", "mean", "ci95"}`` per grid entry)."""
    scored, table = [], []
    for setting in grid:
        result = score(meta_learner, val_domains, shot, config, setting)
        scored.append((setting, result.mean))
        table.append({**setting.as_dict(), "mean": result.mean, "ci95": result.ci95})
    return choose(scored), table
