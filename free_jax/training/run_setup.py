"""What a FREE run and a later evaluation of its checkpoints both build from the config and the zoo.

``training.loop`` (training, resuming) and ``training.evaluate_saved`` (scoring a saved
meta-learner) must agree on the meta-learner's input, on the state a checkpoint is restored
onto, on the metadata a checkpoint is checked against and on the random-init baseline; both
take them from here.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from free_jax.models.learner import MetaLearner, create_meta_learner
from free_jax.training.methods import state_bank_capacity
from free_jax.training.state import FreeState, init_state
from free_jax.zoo.store import Zoo

# The random-init baseline's meta-learner is drawn from key(seed + RANDOM_INIT_SEED_OFFSET), a
# key no other part of the run uses, so it is the same network at training and at evaluation.
RANDOM_INIT_SEED_OFFSET = 12345


def meta_learner_input(config, specs) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """(image_shape, mean, std) of the meta-learner, read from the zoo's teacher specs.

    Data-free by construction: every ``TeacherSpec`` stores its dataset's channel count and the
    per-channel mean/std of that dataset's meta-train split, so once the zoo exists no training
    image is needed. The meta-learner takes (image_size, image_size, C) images normalised with,
    over the D configured datasets, mean = (1/D) Σ_d mean_d and std = (1/D) Σ_d std_d.

    Raises:
      ValueError: a configured dataset has no teacher in the zoo, or the datasets' channel
        counts differ.
    """
    per_dataset = []
    for name in config.datasets:
        spec = next((s for s in specs if s.dataset == name), None)
        if spec is None:
            raise ValueError(f"the zoo has no teacher of dataset {name!r}, so its input normalisation is unknown; "
                             "point the run at a zoo pre-trained on every configured dataset")
        per_dataset.append(spec)
    channels = {int(spec.image_shape[-1]) for spec in per_dataset}
    if len(channels) != 1:
        raise ValueError("multi-domain runs need the same channel count in every dataset")
    image_shape = (config.image_size, config.image_size, channels.pop())
    mean = np.mean([spec.mean for spec in per_dataset], axis=0)
    std = np.mean([spec.std for spec in per_dataset], axis=0)
    return image_shape, mean, std


def train_metadata(config) -> dict:
    """The settings a checkpoint is written for; a resume or a saved evaluation must match them.

    The method and the meta-training objective are recorded only when they are not FREE's
    defaults, so checkpoints written before they existed (all FREE, BELL) still resume."""
    record = {"datasets": list(config.datasets), "image_size": config.image_size, "way": config.way,
              "shot": config.shot, "meta_arch": config.meta_arch, "meta_width": config.meta_width}
    for name, default in (("method", "free"), ("meta_objective", "bell")):
        if config.get(name, default) != default:
            record[name] = config[name]
    return record


def state_constructor(config, zoo: Zoo, image_shape, mean, std, step_cfg) -> Callable[[], FreeState]:
    """``make()`` -> the run's fresh ``FreeState``; ``jax.eval_shape(make)`` is the restore target.

    Args:
      config: the run's configuration. zoo: its teacher zoo (the memory bank spans every class id).
      image_shape, mean, std: the meta-learner's input (``meta_learner_input``).
      step_cfg: ``training.config.step_config(config)``.
    """
    num_classes_total = max(max(spec.class_ids) for spec in zoo.specs) + 1
    make = lambda: init_state(jax.random.key(config.seed), meta_arch=config.meta_arch, meta_width=config.meta_width,
                              way=config.way, image_shape=image_shape, mean=mean, std=std,
                              inversion=step_cfg.inversion, outer_lr=config.outer_lr,
                              num_classes_total=num_classes_total, bank_capacity=state_bank_capacity(config),
                              bank_dtype=config.bank_dtype)
    return make


def random_init_meta_learner(config, image_shape, mean, std) -> MetaLearner:
    """The random-init baseline: an untrained meta-learner of the run's architecture and input.

    Drawn from ``key(config.seed + RANDOM_INIT_SEED_OFFSET)``, so the training loop's meta-test
    and ``evaluate_saved(baseline=True)`` score the same network.
    """
    return create_meta_learner(jax.random.key(config.seed + RANDOM_INIT_SEED_OFFSET), config.meta_arch,
                               config.way, image_shape, mean, std, config.meta_width)
