"""The data-free meta-learning methods a run can train (``--config.method``), as interchangeable parts.

Every method shares the zoo, the meta-learner, the evaluation episodes and the results table
(docs/algorithm.md §5). They differ in where the replay tasks come from and whether θ is trained:

| method            | recovery (``inversion.recovery``)    | meta-training         | data-free |
| ----------------- | ------------------------------------ | --------------------- | --------- |
| ``free``          | FIVE meta-generator, k steps         | ``meta_objective``    | yes       |
| ``fresh_generator``| fresh generator per teacher, S steps | ``meta_objective``    | yes       |
| ``pixel``         | PURER-style pixels per teacher       | ``meta_objective``    | yes       |
| ``oracle_maml``   | none: a bank of real meta-train images | MAML replay only    | **no**    |
| ``random``        | none                                 | none (θ as initialised) | yes     |
| ``average``       | none                                 | none (teacher mean)   | yes       |

The recovering methods differ only in the recovery the training step calls
(``StepConfig.recovery``); their images enter the same memory bank and feed the same BELL
alignment and MAML replay. The oracle runs the same replay code on a bank filled once with the
real meta-train images (the zoo's training data), for the same budget: (iterations − warm-up) ×
``replay.batches`` meta-batches of ``replay.tasks_per_batch`` tasks, same inner steps and lr,
same outer Adam. ``random`` and ``average`` train nothing and are evaluated as they are.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from free_jax import data as data_lib, memory
from free_jax.models.learner import MetaLearner
from free_jax.training import evaldata
from free_jax.training.step import OBJECTIVES
from free_jax.zoo.store import Zoo

META_OBJECTIVES = OBJECTIVES       # "bell" (alignment + replay), "replay", "align"


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the table above.

    Attributes:
      name: the ``--config.method`` value. label: how results name it. source: its paper.
      recovery: the ``inversion.recovery`` it runs each iteration (None: none).
      trains: whether θ is meta-trained. data_free: whether it uses no real training image.
    """

    name: str
    label: str
    source: str
    recovery: str | None
    trains: bool
    data_free: bool = True

    @property
    def real_tasks(self) -> bool:
        """Trained on real meta-train tasks (the oracle) rather than on recovered ones."""
        return self.trains and self.recovery is None


METHODS = {method.name: method for method in (
    Method("free", "FREE", "Wei et al., CVPR 2024", "five", trains=True),
    Method("fresh_generator", "fresh generator per teacher", "BiDf-MKD, Hu et al., ICCV 2023; TGR",
           "fresh_generator", trains=True),
    Method("pixel", "pixel inversion (PURER-style)", "PURER, Hu et al., ECCV 2022", "pixel", trains=True),
    Method("random", "random init, untrained", "no meta-training", None, trains=False),
    Method("average", "teacher parameter average", "parameter averaging of the zoo", None, trains=False),
    Method("oracle_maml", "oracle MAML on real meta-train tasks (not data-free)", "Finn et al., ICML 2017",
           None, trains=True, data_free=False),
)}


def method_of(config) -> Method:
    """The run's ``Method``; ValueError naming the choices for an unknown name."""
    if config.method not in METHODS:
        raise ValueError(f"--config.method={config.method!r} is invalid: it must be one of {tuple(METHODS)}.")
    return METHODS[config.method]


def step_settings(config) -> dict:
    """The ``StepConfig`` fields the method sets: the recovery and the meta-training objective
    (without a recovery, replay: the oracle's objective; untrained methods never run a step)."""
    method = method_of(config)
    return {"recovery": method.recovery, "objective": config.meta_objective if method.recovery else "replay"}


def state_bank_capacity(config) -> int:
    """Capacity per class of the training state's bank: the oracle replays from its own bank of
    real images (``real_task_bank``), so its state keeps a bank of one image per class."""
    return 1 if method_of(config).real_tasks else config.bank_capacity


# ----------------------------------------------------------------------------- oracle
def real_task_bank(config) -> memory.MemoryBank:
    """Every real meta-train image of the configured datasets, as a memory bank (the oracle's tasks).

    Classes carry the zoo's global ids (``data.combine_domains`` offsets, as the zoo's teachers);
    images are resized to the meta-learner's ``image_size``; the capacity is the largest class, so
    every image is kept and each class samples among all of its own. Stored as uint8 (lossless).

    Raises:
      ValueError: fewer than ``way`` classes hold ``shot + query`` images.
    """
    splits = [data_lib.load_split(name, "train", config.data_dir or None, **evaldata.data_options(config, name))
              for name in config.datasets]
    combined = data_lib.combine_domains(splits)
    images = np.concatenate([evaldata.resize_uint8(split.images, config.image_size) for split in splits])
    labels = np.concatenate([combined.global_labels(d) for d in range(len(splits))])
    counts = np.bincount(labels, minlength=combined.num_classes_total)
    order = np.argsort(labels, kind="stable")
    slots = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)       # index within its class
    stored = np.zeros((combined.num_classes_total, int(counts.max()), *images.shape[1:]), np.uint8)
    stored[labels[order], slots] = images[order]
    bank = memory.MemoryBank(images=jnp.asarray(stored), counts=jnp.asarray(counts, jnp.int32))
    memory.check_can_sample(bank, config.way, config.shot, config.query)
    return bank


# ----------------------------------------------------------------------------- untrained
def _head_name(params) -> str:
    """The classification head: the one top-level Dense layer of the backbone (Conv4, ResNet)."""
    heads = [name for name in params if name.startswith("Dense")]
    if len(heads) != 1:
        raise ValueError(f"cannot tell the classification head among the top-level parameters {sorted(params)}")
    return heads[0]


def average_meta_learner(zoo: Zoo, initial: MetaLearner, meta_arch: str, meta_width: int) -> MetaLearner:
    """θ = the mean of the parameters of every zoo teacher of the meta-learner's architecture and
    width, head re-initialised: the head is ``initial``'s (the run's random θ), everything else
    (convolutions, BatchNorm scales and offsets) the plain mean over those teachers.

    Raises:
      ValueError: no teacher has the meta-learner's architecture and width (saying what to set),
        or the teachers' input channels differ from the meta-learner's.
    """
    chosen = [spec for spec in zoo.specs if spec.arch == meta_arch and spec.width == meta_width]
    if not chosen:
        kinds = sorted({(spec.arch, spec.width) for spec in zoo.specs})
        raise ValueError(
            f"method 'average' needs teachers of the meta-learner's architecture {meta_arch} width {meta_width}, "
            f"the zoo has {', '.join(f'{arch} width {width}' for arch, width in kinds)}: set --config.meta_arch and "
            "--config.meta_width to one of these, or pre-train a zoo of the meta-learner's "
            f"(--config.zoo.archs='(\"{meta_arch}\",)' --config.zoo.width={meta_width} and another --config.zoo_path)")
    channels = int(initial.mean.shape[0])
    if any(int(spec.image_shape[-1]) != channels for spec in chosen):
        raise ValueError(f"method 'average': the teachers take {sorted({spec.image_shape[-1] for spec in chosen})}-"
                         f"channel images, the meta-learner {channels}-channel ones")
    head = _head_name(initial.params)
    body = {name: value for name, value in initial.params.items() if name != head}
    total = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, np.float64), body)
    for name in dict.fromkeys(spec.group for spec in chosen):
        stacked = zoo.group(name).variables["params"]
        teacher_body = {key: stacked[key] for key in body}
        total = jax.tree_util.tree_map(lambda acc, leaf: acc + np.asarray(leaf, np.float64).sum(0), total,
                                       teacher_body)
    mean = jax.tree_util.tree_map(lambda acc, leaf: jnp.asarray(acc / len(chosen), leaf.dtype), total, body)
    return initial.replace_params({**mean, head: initial.params[head]})


def untrained_meta_learner(config, zoo: Zoo, initial: MetaLearner) -> MetaLearner:
    """The meta-learner of an untrained method: ``initial`` (the run's random θ, "random") or the
    teacher average with ``initial``'s head ("average")."""
    method = method_of(config)
    if method.trains:
        raise ValueError(f"method {method.name!r} trains its meta-learner")
    if method.name == "average":
        return average_meta_learner(zoo, initial, config.meta_arch, config.meta_width)
    return initial
