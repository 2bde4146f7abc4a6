"""Pre-train a zoo if it is absent, resume it if it was interrupted, load it otherwise.

``build_or_load_zoo(path, config)`` is what binaries call. The zoo is built per
(dataset, architecture) pair, in runs of ``config.save_every`` teachers, saving the zoo after
each run; the seed of every teacher depends only on the seed, the pair and the teacher's index
in its pair, so a resumed or extended zoo is identical to one built in one go.

Resume order: load the zoo at ``path`` → check it matches the configuration → count the
teachers each pair already has → pre-train the missing ones run by run, saving after each.
"""
from __future__ import annotations

import functools
import shutil
import statistics
import time
import zlib
from pathlib import Path

import jax
import ml_collections
import numpy as np

from free_jax import data as data_lib
from free_jax.locks import claim, waiting_lock
from free_jax.progress import ProgressLine
from free_jax.zoo.pretrain import pretrain_teachers
from free_jax.zoo.store import Zoo

# Fields that define the teachers: a stored zoo built with other values is a mismatch.
_IDENTITY_FIELDS = ("datasets", "archs", "way", "epochs", "seed", "width", "batch_size",
                    "data_options", "crop_padding", "flip", "learning_rate")

# zoo.epoch_loop -> pretrain_teachers' unroll_steps (None: its per-backend default).
_EPOCH_LOOPS = {"auto": None, "unroll": True, "scan": False}


def data_options_config() -> ml_collections.ConfigDict:
    """Loader options shared by every dataset of a zoo or run, unset (None) by default.

    ``image_size``, ``channels`` and ``renderings_per_class`` are the generated glyph sets' options
    (CUB takes ``image_size`` too); ``free_jax.data.loader_options`` passes the set ones to each
    loader and rejects one a loader does not take."""
    placeholder = ml_collections.config_dict.placeholder
    return ml_collections.ConfigDict({"image_size": placeholder(int), "channels": placeholder(int),
                                      "renderings_per_class": placeholder(int)})


def default_config() -> ml_collections.ConfigDict:
    """Zoo configuration; every field is described in the comments.

    Teacher optimisers (``free_jax.zoo.pretrain.default_optimizer``): Conv4 teachers use Adam,
    lr 0.01, gradient clipping at global norm 50. ResNet-10/18 teachers use the released code's
    step schedule: SGD, lr 0.01, momentum 0.9, weight decay 5e-4, the learning rate multiplied
    by γ = 0.2 at epochs 30, 50 and 80 (at the default 60 epochs: 0.01, then 0.002 from epoch 30,
    0.0004 from epoch 50). ``learning_rate`` replaces the base rate; the milestones stay.
    """
    config = ml_collections.ConfigDict()
    config.datasets = ("glyphs",)   # several: multi-domain zoo (global ids made disjoint)
    config.archs = ("conv4",)       # several: multi-architecture zoo
    config.num_teachers = 100       # in total, spread evenly over (dataset, arch) pairs
    config.way = 5                  # classes per teacher
    config.epochs = 60              # docs/algorithm.md §3
    config.seed = 0
    config.width = 0                # 0: the architecture's default (64)
    config.batch_size = 128
    config.learning_rate = 0.0      # 0: the architecture's default (0.01)
    config.crop_padding = 0         # random-crop augmentation padding (0: off)
    config.flip = False             # horizontal flips (never for glyphs)
    config.data_dir = ""            # "" : each loader's default
    config.data_options = data_options_config()  # loader options; unset = the loader's default
    config.strategy = "auto"        # vectorisation over teachers (free_jax.vectorize)
    config.chunk_size = 0           # teachers per compiled program (0: backend default)
    config.save_every = 20          # teachers pre-trained between two saves (resume points)
    config.epoch_loop = "auto"      # an epoch's steps: "unroll", "scan" or "auto" (unrolled on CPU at <= 8 steps)
    return config


def _pairs(config) -> list[tuple[str, str, int]]:
    """(dataset, arch, teachers wanted) for every pair, in config order."""
    pairs = [(d, a) for d in config.datasets for a in config.archs]
    base, extra = divmod(int(config.num_teachers), len(pairs))
    return [(d, a, base + (i < extra)) for i, (d, a) in enumerate(pairs)]


def _identity(config) -> dict:
    values = {}
    for field in _IDENTITY_FIELDS:
        value = config.get(field)
        if isinstance(value, ml_collections.ConfigDict):
            value = value.to_dict()
        if field == "data_options":     # unset options are the loaders' defaults, however spelled
            value = {key: option for key, option in dict(value or {}).items() if option is not None}
        values[field] = list(value) if isinstance(value, (tuple, list)) else value
    return values


def load_train_splits(config) -> tuple[list, tuple[int, ...]]:
    """Meta-train splits of the configured datasets and their global class offsets."""
    splits = [data_lib.load_split(name, "train", config.data_dir or None,
                                  **data_lib.loader_options(name, config.data_options))
              for name in config.datasets]
    return splits, data_lib.combine_domains(splits).class_offsets


def _show_pretraining(line: ProgressLine, done_before: int, label: str, event: dict) -> None:
    """Updates ``line`` from one ``pretrain_teachers`` progress event; a teacher part-way through
    its epochs counts as that fraction of a teacher in the rate and the ETA."""
    finished = done_before + event["teachers_done"]
    epoch, epochs = event["epoch"], event["epochs"]
    running = 0.0 if epoch == epochs else event["teachers_in_progress"] * epoch / epochs
    accuracy = float(np.median(event["chunk_accuracy"]))
    line.update(finished + running, f"{label} epoch {epoch}/{epochs} (median held-out {accuracy:.2f})", shown=finished)


def build_or_load_zoo(path: str, config, *, progress: bool = True, shared: bool = False) -> Zoo:
    """The zoo at ``path``: loaded if complete, resumed if partial, pre-trained if absent.

    Args:
      path: zoo directory.
      config: fields of ``default_config()`` (a ConfigDict or dict).
      progress: True for a progress line on stderr, False for none.
      shared: several processes build this zoo together, each pre-training the runs of
        ``save_every`` teachers it claims first (``_build_shared``); the zoo is the same.

    Raises:
      ValueError: the zoo at ``path`` was built with another configuration (architectures,
        image size, class count, datasets, epochs, seed...); the message names the field.
    """
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if config.get("epoch_loop", "auto") not in _EPOCH_LOOPS:
        raise ValueError(f"zoo.epoch_loop={config.epoch_loop!r} is invalid; use one of {sorted(_EPOCH_LOOPS)}")
    identity = _identity(config)
    pairs = _pairs(config)
    if any(wanted < 1 for _, _, wanted in pairs):
        raise ValueError(f"zoo.num_teachers={config.num_teachers} is too small: the zoo needs at least one teacher "
                         f"per (dataset, architecture) pair, i.e. ≥ {len(pairs)}. Raise --config.zoo.num_teachers")
    zoo = Zoo.empty({"build": identity, "complete": False})
    if Zoo.exists(path):
        zoo = Zoo.load(path)
        zoo.check_compatible(way=config.way, path=path)
        stored = zoo.metadata.get("build", {})
        for field in _IDENTITY_FIELDS:
            if stored.get(field) != identity[field]:
                raise ValueError(f"the zoo at {path} was built with {field}={stored.get(field)!r}, the "
                                 f"configuration says {identity[field]!r}; point the run at another zoo "
                                 "directory, or delete this one so it is pre-trained again")
        counts = {(d, a): sum(1 for s in zoo.specs if s.dataset == d and s.arch == a) for d, a, _ in pairs}
        if all(counts[(d, a)] >= n for d, a, n in pairs):
            return zoo
    else:
        counts = {(d, a): 0 for d, a, _ in pairs}

    splits, offsets = load_train_splits(config)
    for split in splits:
        if zoo.specs:
            stored_shapes = {tuple(s.image_shape) for s in zoo.specs if s.dataset == split.name}
            if stored_shapes and stored_shapes != {split.image_shape}:
                raise ValueError(f"the zoo at {path} has {split.name} teachers for images {sorted(stored_shapes)}, "
                                 f"the data gives {split.image_shape}; point the run at another zoo "
                                 "directory, or delete this one so it is pre-trained again")
    total = sum(n for _, _, n in pairs)
    line = (ProgressLine(total, sum(min(counts[(d, a)], n) for d, a, n in pairs), name="zoo", unit="teachers")
            if progress is True else None)
    train_run = functools.partial(_pretrain_run, config, splits, offsets, line)
    if shared:
        zoo = _build_shared(path, zoo, counts, pairs, int(config.save_every), train_run)
    else:
        for dataset, arch, wanted in pairs:
            while counts[(dataset, arch)] < wanted:
                first = counts[(dataset, arch)]
                count = min(int(config.save_every), wanted - first)
                zoo = zoo.extend([train_run(dataset, arch, first, count, sum(counts.values()))])
                counts[(dataset, arch)] += count
                zoo.metadata["complete"] = all(counts[(d, a)] >= n for d, a, n in pairs)
                zoo.save(path)
    if line is not None:
        line.newline()
    return zoo


def _pretrain_run(config, splits, offsets, line, dataset: str, arch: str, first: int, count: int,
                  done_before: int):
    """Pre-trains teachers ``first .. first + count - 1`` of the (dataset, arch) pair (the seed of
    each depends only on the seed, the pair and its index); returns ``pretrain_teachers``' output."""
    split = splits[list(config.datasets).index(dataset)]
    offset = offsets[list(config.datasets).index(dataset)]
    pair_key = jax.random.fold_in(jax.random.key(int(config.seed)),
                                  zlib.crc32(f"{dataset}/{arch}".encode()) & 0x7FFFFFFF)
    callback = None
    if line is not None:
        callback = lambda event: _show_pretraining(line, done_before, f"{arch}/{dataset}", event)
    overrides = {"learning_rate": config.learning_rate} if config.learning_rate else {}
    return pretrain_teachers(
        split, arch, count, config.way, config.epochs, pair_key, width=config.width or None,
        batch_size=config.batch_size, class_offset=offset, strategy=config.strategy,
        progress=callback, first_teacher=first, chunk_size=config.chunk_size or None,
        crop_padding=config.crop_padding, flip=config.flip, unroll_steps=_EPOCH_LOOPS[config.get("epoch_loop", "auto")],
        **overrides)


def _build_shared(path: str, zoo: Zoo, counts: dict, pairs, save_every: int, train_run, poll_s: float = 2.0) -> Zoo:
    """The missing teachers pre-trained by every process that calls this on ``path`` together.

    The work is cut into runs of ``save_every`` teachers, as the one-process build saves them;
    each run is trained by the process that claims it (``<path>.parts/<run>.claim``, released
    when that process ends or dies) and saved as a zoo of its own (``<path>.parts/<run>``). A
    process with nothing left to claim waits for the runs others hold (taking over a run whose
    holder died); then the first process to get there merges the runs, in the one-process build's
    order, into the zoo at ``path`` (so it is identical to a zoo built in one go), and every
    process removes the parts as it leaves.
    """
    parts = Path(path).parent / f"{Path(path).name}.parts"
    runs = [(d, a, first, min(save_every, wanted - first)) for d, a, wanted in pairs
            for first in range(counts[(d, a)], wanted, save_every)]
    part = lambda run: parts / f"{run[0]}-{run[1]}-{run[2]}"
    complete = lambda: (Zoo.stored_metadata(path) or {}).get("complete", False)     # the index only
    done = sum(counts.values())
    while not complete():
        held_elsewhere = False
        for run in runs:
            if Zoo.exists(part(run)):
                continue
            with claim(part(run).with_suffix(".claim")) as mine:
                if not mine:
                    held_elsewhere = True
                elif not Zoo.exists(part(run)) and not complete():   # not finished meanwhile
                    Zoo.from_pretrained([train_run(run[0], run[1], run[2], run[3], done)]).save(part(run))
                    done += run[3]
        if not held_elsewhere:
            break
        time.sleep(poll_s)
    with waiting_lock(parts.with_suffix(".lock")):
        if complete():
            zoo = Zoo.load(path)
        else:
            for run in runs:
                zoo = zoo.extend(Zoo.load(part(run)))
            zoo.metadata["complete"] = True
            zoo.save(path)
        # Every process removes the parts as it leaves (one still looking for work may have
        # re-created the directory for its claims after the merge): none is left after the last.
        shutil.rmtree(parts, ignore_errors=True)
    return zoo


def summarize(zoo: Zoo) -> str:
    """Held-out accuracy min / median / max per architecture and dataset (markdown table)."""
    rows = ["| arch | dataset | teachers | held-out min | median | max |", "| --- | --- | --- | --- | --- | --- |"]
    keys = dict.fromkeys((s.arch, s.dataset) for s in zoo.specs)
    for arch, dataset in keys:
        accuracy = [s.heldout_accuracy for s in zoo.specs if s.arch == arch and s.dataset == dataset]
        rows.append(f"| {arch} | {dataset} | {len(accuracy)} | {min(accuracy):.3f} | "
                    f"{statistics.median(accuracy):.3f} | {max(accuracy):.3f} |")
    return "\n".join(rows)


__all__ = ["build_or_load_zoo", "default_config", "load_train_splits", "summarize"]
