"""Vectorised pre-training of many teachers of one architecture (the zoo, docs/algorithm.md §1 and §3).

Each teacher t draws ``way`` classes of a meta-train split at random, splits each class's
images 80/20 into train/held-out, and is trained with its own optimiser on relative labels
0..N-1; after every epoch its held-out accuracy (BatchNorm running statistics) is measured and
the best epoch's weights are kept as a true snapshot (a separate buffer, docs/algorithm.md §6.6).

The JAX way: the teachers' variables and optimiser states are one stacked pytree with a leading
teacher axis; the dataset is on device once and each teacher's batches are gathered from it by
index; one jitted program runs a whole epoch (``lax.scan`` over steps, every step mapped over the
teachers of a chunk with ``free_jax.vectorize.map_leading``) followed by the held-out evaluation
and the best-snapshot update. Chunks of teachers share the compiled program (the last chunk is
padded), so M teachers cost one compilation.

Everything a teacher draws (classes, split, initialisation, batch order, augmentation) derives
from ``fold_in(key, run index)`` only, so a teacher's weights do not depend on which other
teachers share its chunk or on the strategy: vectorised training equals training it alone (tests).

Default strategy: on CPU "auto" is the loop over chunks of 4 teachers with an epoch's steps
unrolled (≤ 8 steps; a scan beyond), about 3× the sequential throughput; on GPU it is vmap over
chunks of up to 128 teachers. The measurements behind the choice are in BENCHMARKS.md
("Design measurements").
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from free_jax import augment, vectorize
from free_jax.data.base import SplitData
from free_jax.models import apply, apply_and_update_stats, build_backbone, init_variables
from free_jax.normalization import normalize, to_unit_float
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.spec import TeacherSpec, group_name

TRAIN_FRACTION = 0.8


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Teacher optimiser (docs/algorithm.md §3). ``weight_decay`` is added to the gradient as in PyTorch.

    Step schedule: the learning rate at optimiser step t (0-based) is
    lr(t) = learning_rate · lr_gamma^|{m ∈ lr_milestones : t ≥ m · steps_per_epoch}|,
    i.e. multiplied by ``lr_gamma`` at the start of every milestone epoch (PyTorch's
    ``MultiStepLR`` stepped once per epoch). No milestones: a constant learning rate.
    """

    name: str  # "adam" or "sgd"
    learning_rate: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 50.0
    lr_milestones: tuple[int, ...] = ()   # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 1.0

    def learning_rate_schedule(self, steps_per_epoch: int):
        """lr(t) of the class docstring (``optax.piecewise_constant_schedule``), or the constant lr."""
        if not self.lr_milestones:
            return self.learning_rate
        return optax.piecewise_constant_schedule(
            self.learning_rate, {int(m) * steps_per_epoch: self.lr_gamma for m in self.lr_milestones})

    def make(self, steps_per_epoch: int = 1) -> optax.GradientTransformation:
        """clip_by_global_norm(grad_clip) → g + weight_decay·θ → Adam or SGD with momentum, at the
        learning rate ``learning_rate_schedule(steps_per_epoch)``."""
        learning_rate = self.learning_rate_schedule(steps_per_epoch)
        chain = [optax.clip_by_global_norm(self.grad_clip)] if self.grad_clip else []
        if self.weight_decay:
            chain.append(optax.add_decayed_weights(self.weight_decay))
        if self.name == "adam":
            chain.append(optax.adam(learning_rate))
        elif self.name == "sgd":
            chain.append(optax.sgd(learning_rate, momentum=self.momentum or None))
        else:
            raise ValueError(f"unknown optimizer {self.name!r}; choose 'adam' or 'sgd'")
        return optax.chain(*chain)


RESNET_LR_MILESTONES = (30, 50, 80)   # epochs; the released code's step schedule for ResNet teachers
RESNET_LR_GAMMA = 0.2


def default_optimizer(arch: str, **overrides) -> OptimizerConfig:
    """Conv4: Adam lr 0.01 (constant). ResNets (the released code's schedule): SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, lr × 0.2 at epochs 30, 50 and 80. Clip 50 for all."""
    if arch == "conv4":
        config = OptimizerConfig("adam", 0.01)
    else:
        config = OptimizerConfig("sgd", 0.01, momentum=0.9, weight_decay=5e-4,
                                 lr_milestones=RESNET_LR_MILESTONES, lr_gamma=RESNET_LR_GAMMA)
    return dataclasses.replace(config, **overrides)


def default_width(arch: str) -> int:
    """Teacher width: 64 channels for Conv4 teachers (docs/algorithm.md §3), 64 base width for ResNets."""
    return 64


@dataclasses.dataclass(frozen=True)
class _Plans:
    """Per-teacher index plans into the split (host numpy, leading teacher axis)."""

    classes: np.ndarray        # (M, N) split labels of each teacher's classes
    train_index: np.ndarray    # (M, L_train) image indices, cycled to a common length
    train_labels: np.ndarray   # (M, L_train) relative labels
    held_index: np.ndarray     # (M, L_held)
    held_labels: np.ndarray    # (M, L_held)
    held_mask: np.ndarray      # (M, L_held) 1 for real held-out images, 0 for padding


def _plan_teachers(labels: np.ndarray, num_classes: int, way: int, seeds: np.ndarray) -> _Plans:
    """Draws each teacher's classes and 80/20 split from its seed alone (numpy)."""
    if way > num_classes:
        raise ValueError(f"way={way} exceeds the {num_classes} classes of the split")
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    counts = np.array([len(index) for index in by_class])
    if counts.min() < 2:
        raise ValueError("every class needs at least 2 images (one train, one held-out)")
    n_train = np.clip(np.round(TRAIN_FRACTION * counts).astype(int), 1, counts - 1)
    # Common lengths depend on the split only, never on which teachers share a chunk.
    train_len, held_len = way * int(n_train.max()), way * int((counts - n_train).max())
    plans = {name: [] for name in ("classes", "train_index", "train_labels", "held_index",
                                   "held_labels", "held_mask")}
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        classes = rng.choice(num_classes, size=way, replace=False)
        train, train_y, held, held_y = [], [], [], []
        for relative, c in enumerate(classes):
            index = rng.permutation(by_class[c])
            train.append(index[:n_train[c]])
            held.append(index[n_train[c]:])
            train_y.append(np.full(n_train[c], relative))
            held_y.append(np.full(len(index) - n_train[c], relative))
        train, train_y = np.concatenate(train), np.concatenate(train_y)
        order = rng.permutation(len(train))  # so that cycling pads with a mix of classes
        held, held_y = np.concatenate(held), np.concatenate(held_y)
        pad = held_len - len(held)
        plans["classes"].append(classes)
        plans["train_index"].append(np.resize(train[order], train_len))
        plans["train_labels"].append(np.resize(train_y[order], train_len))
        plans["held_index"].append(np.pad(held, (0, pad)))
        plans["held_labels"].append(np.pad(held_y, (0, pad)))
        plans["held_mask"].append(np.pad(np.ones(len(held), np.float32), (0, pad)))
    return _Plans(**{name: np.stack(value).astype(np.float32 if name == "held_mask" else np.int32)
                     for name, value in plans.items()})


def _augment(key: jax.Array, images: jnp.ndarray, crop_padding: int, flip: bool) -> jnp.ndarray:
    """Per-sample random crop (zero padding ``crop_padding``) and optional horizontal flip.

    The crop and the flip are ``augment``'s; the key schedule is this module's own, kept so that
    zoos pre-train as before: with a crop, ``split(key)`` gives (flip key, crop key), the reverse
    of ``augment.random_crop_flip``; without one, the flip draws from ``key`` itself.
    """
    if crop_padding:
        key, crop_key = jax.random.split(key)
        images = augment.random_crop(crop_key, images, crop_padding)
    return augment.random_flip(key, images) if flip else images


@functools.lru_cache(maxsize=32)
def _epoch_program(module, optimizer: OptimizerConfig, batch_size: int, steps: int,
                   strategy: str, crop_padding: int, flip: bool, unroll_steps: bool):
    """Jitted ``epoch(state, keys, plans, images, mean, std) -> (state, heldout_accuracy)``."""
    tx = optimizer.make(steps_per_epoch=steps)

    def train_step_one(variables, opt_state, images01, labels, key):
        """One optimiser step of one teacher on a batch: CE(f(aug(x)), y), BN in batch mode."""
        x = _augment(key, images01, crop_padding, flip)

        def loss_fn(params):
            logits, new_stats = apply_and_update_stats(
                module, {"params": params, "batch_stats": variables["batch_stats"]}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_stats

        (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        updates, opt_state = tx.update(grads, opt_state, variables["params"])
        params = optax.apply_updates(variables["params"], updates)
        return {"params": params, "batch_stats": new_stats}, opt_state

    def evaluate_one(variables, images01, labels, mask):
        logits = apply(module, variables, images01, bn_mode="running")
        return jnp.sum(mask * (jnp.argmax(logits, -1) == labels)) / jnp.sum(mask)

    def epoch(state, epoch_keys, plans, images, mean, std):
        variables, opt_state, best, best_accuracy, best_epoch, epoch_index = state
        num = best_accuracy.shape[0]

        def load(index):  # (T, B) image indices -> (T, B, H, W, C) normalised floats
            return normalize(to_unit_float(images[index]), mean, std)

        positions = jax.vmap(lambda k: jax.random.permutation(k, plans["train_index"].shape[1]))(
            jax.vmap(lambda k: jax.random.fold_in(k, 0))(epoch_keys))
        # ceil(L / B) batches; the last one is completed with the permutation's first images.
        positions = jnp.concatenate([positions, positions], axis=1)[:, :steps * batch_size]
        positions = positions.reshape(num, steps, batch_size)
        step_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 1), steps))(epoch_keys)

        def step(carry, xs):
            variables, opt_state = carry
            position, keys = xs  # (T, B), (T,)
            index = jnp.take_along_axis(plans["train_index"], position, axis=1)
            labels = jnp.take_along_axis(plans["train_labels"], position, axis=1)
            return vectorize.map_leading(train_step_one, variables, opt_state, load(index), labels,
                                         keys, strategy=strategy), None

        (variables, opt_state), _ = jax.lax.scan(
            step, (variables, opt_state), (jnp.swapaxes(positions, 0, 1), jnp.swapaxes(step_keys, 0, 1)),
            unroll=steps if unroll_steps else 1)
        accuracy = vectorize.map_leading(evaluate_one, variables, load(plans["held_index"]),
                                         plans["held_labels"], plans["held_mask"], strategy=strategy)
        improved = accuracy > best_accuracy  # the first best epoch is kept on ties

        def keep(best_leaf, leaf):  # a fresh buffer: a true snapshot
            return jnp.where(improved.reshape((num,) + (1,) * (leaf.ndim - 1)), leaf, best_leaf)

        best = jax.tree_util.tree_map(keep, best, variables)
        best_accuracy = jnp.where(improved, accuracy, best_accuracy)
        epoch_index = epoch_index + 1
        best_epoch = jnp.where(improved, epoch_index, best_epoch)
        return (variables, opt_state, best, best_accuracy, best_epoch, epoch_index), accuracy

    return jax.jit(epoch, donate_argnums=0), jax.jit(jax.vmap(tx.init))


@functools.lru_cache(maxsize=32)
def _init_program(module, image_shape: tuple[int, int, int]):
    """``init(keys (T,)) -> stacked variables``: the single-teacher init (``init_variables``, one
    jitted program per architecture and image shape whatever the chunk size: threefry-heavy
    initialisers compile slowly on CPU), called per key; values equal a vmapped init.
    """
    return lambda keys: jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves),
                                               *[init_variables(module, k, image_shape) for k in keys])


def resolve_chunk(strategy: str, num_teachers: int, chunk_size: int | None) -> tuple[str, int]:
    """Concrete strategy and teachers per compiled chunk (see the module docstring)."""
    strategy = vectorize.resolve(strategy)
    if chunk_size is None:  # an explicit chunk size is kept (padding), so programs are reused
        chunk_size = min(num_teachers, 128 if strategy == "vmap" and jax.default_backend() != "cpu" else 4)
    return strategy, max(1, chunk_size)


def pretrain_teachers(split: SplitData, arch: str, num_teachers: int, way: int, epochs: int,
                      key: jax.Array, *, width: int | None = None, batch_size: int = 128,
                      class_offset: int = 0, strategy: str = "auto", progress: Callable | None = None,
                      first_teacher: int = 0, chunk_size: int | None = None, crop_padding: int = 0,
                      flip: bool = False, unroll_steps: bool | None = None,
                      **optimizer_overrides) -> tuple[TeacherGroup, list[TeacherSpec]]:
    """Pre-trains ``num_teachers`` teachers of ``arch`` on random ``way``-class tasks of ``split``.

    Teacher ``i`` (run index ``first_teacher + i``) draws everything from
    ``fold_in(key, first_teacher + i)``, so training teachers 0..9 then 10..19 (resume) equals
    training 0..19 at once. Each step minimises the mean cross-entropy on relative labels,
    L(θ) = −(1/B) Σ_b log softmax(f_θ(aug(x_b)))[y_b], with the optimiser of
    ``default_optimizer(arch, **optimizer_overrides)`` (a step schedule's epochs count the
    ⌈L_train / batch⌉ optimiser steps below). Epochs run ⌈L_train / batch⌉ steps over
    a fresh per-teacher permutation; the last batch is completed with the permutation's first
    images (static shapes), and a split smaller than a batch uses one batch of all its images.

    Args:
      split: the meta-train split (uint8 images, labels within the split).
      arch: "conv4", "resnet10" or "resnet18". width: channels (default 64).
      num_teachers: M. way: classes per teacher (N). epochs: training epochs.
      key: the run's key. batch_size: per-teacher batch (docs/algorithm.md §3: 128).
      class_offset: added to split labels to make global class ids (multi-domain zoos).
      strategy: "auto", "vmap", "loop" or "lax_map" (``free_jax.vectorize``); all equal in value.
      progress: called after every epoch of every chunk with a dict (teachers_done,
        num_teachers, epoch, epochs, chunk_accuracy, elapsed_s).
      first_teacher: run index of the first teacher (resume / extend).
      chunk_size: teachers per compiled program (default per backend, see ``resolve_chunk``).
      crop_padding, flip: per-sample augmentation (off by default; never flip glyphs).
      unroll_steps: unroll the scan over an epoch's steps (bigger program, ~6× faster on CPU);
        default: unrolled on CPU when an epoch has at most 8 steps.
      **optimizer_overrides: fields of ``OptimizerConfig`` (learning_rate, momentum, ...).

    Returns:
      (group, specs): a ``TeacherGroup`` of the best-epoch snapshots (leading axis M) and one
      ``TeacherSpec`` per teacher (ids 0..M-1 within this run; the zoo renumbers them).
    """
    if num_teachers < 1 or epochs < 1:
        raise ValueError(f"need num_teachers >= 1 and epochs >= 1, got {num_teachers}, {epochs}")
    width = width or default_width(arch)
    module = build_backbone(arch, way, width)
    optimizer = default_optimizer(arch, **optimizer_overrides)
    strategy, chunk = resolve_chunk(strategy, num_teachers, chunk_size)

    run_indices = np.arange(first_teacher, first_teacher + num_teachers)
    teacher_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(run_indices))
    seeds = np.asarray(jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(k, 0), dtype=jnp.uint32))(
        teacher_keys))
    plans = _plan_teachers(np.asarray(split.labels), split.num_classes, way, seeds)
    batch = min(batch_size, plans.train_index.shape[1])
    steps = -(-plans.train_index.shape[1] // batch)
    if unroll_steps is None:
        unroll_steps = jax.default_backend() == "cpu" and steps <= 8
    epoch_fn, opt_init = _epoch_program(module, optimizer, batch, steps, strategy, crop_padding,
                                        bool(flip), bool(unroll_steps))
    init_fn = _init_program(module, split.image_shape)

    images = jnp.asarray(split.images)  # on device once; teachers gather from it by index
    mean, std = jnp.asarray(split.mean, jnp.float32), jnp.asarray(split.std, jnp.float32)
    num_chunks = math.ceil(num_teachers / chunk)
    best_chunks, accuracy_chunks, epoch_chunks, history = [], [], [], []
    start = time.perf_counter()
    for c in range(num_chunks):
        # The last chunk is padded with repeats of its teachers so the program is reused.
        members = np.resize(np.arange(c * chunk, min((c + 1) * chunk, num_teachers)), chunk)
        real = min(chunk, num_teachers - c * chunk)
        chunk_plans = {name: jnp.asarray(getattr(plans, name)[members]) for name in
                       ("train_index", "train_labels", "held_index", "held_labels", "held_mask")}
        keys = teacher_keys[members]
        variables = init_fn(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
        state = (variables, opt_init(variables["params"]),
                 jax.tree_util.tree_map(jnp.zeros_like, variables),
                 jnp.full((chunk,), -1.0, jnp.float32), jnp.zeros((chunk,), jnp.int32),
                 jnp.zeros((), jnp.int32))
        chunk_history = []
        for e in range(epochs):
            epoch_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 2), e))(keys)
            state, accuracy = epoch_fn(state, epoch_keys, chunk_plans, images, mean, std)
            chunk_history.append(np.asarray(accuracy)[:real])
            if progress is not None:
                progress({"teachers_done": c * chunk + (real if e == epochs - 1 else 0),
                          "teachers_in_progress": real, "num_teachers": num_teachers, "epoch": e + 1,
                          "epochs": epochs, "chunk": c, "num_chunks": num_chunks,
                          "chunk_accuracy": chunk_history[-1], "elapsed_s": time.perf_counter() - start})
        _, _, best, best_accuracy, best_epoch, _ = state
        best_chunks.append(jax.tree_util.tree_map(lambda leaf: leaf[:real], best))
        accuracy_chunks.append(np.asarray(best_accuracy)[:real])
        epoch_chunks.append(np.asarray(best_epoch)[:real])
        history.append(np.stack(chunk_history, axis=1))
    best = jax.tree_util.tree_map(lambda *leaves: jnp.concatenate(leaves), *best_chunks)
    best_accuracy, best_epoch = np.concatenate(accuracy_chunks), np.concatenate(epoch_chunks)
    history = np.concatenate(history)

    class_ids = plans.classes + class_offset
    name = group_name(arch, width, split.image_shape, way)
    group = TeacherGroup(
        variables=best, class_ids=jnp.asarray(class_ids, jnp.int32),
        mean=jnp.tile(mean[None], (num_teachers, 1)), std=jnp.tile(std[None], (num_teachers, 1)),
        module=module, arch=arch, image_shape=split.image_shape)
    specs = [TeacherSpec(
        id=i, arch=arch, width=width, dataset=split.name, split=split.split,
        class_ids=tuple(int(c) for c in class_ids[i]),
        class_names=tuple(split.class_names[c] for c in plans.classes[i]),
        image_shape=split.image_shape, mean=tuple(float(m) for m in split.mean),
        std=tuple(float(s) for s in split.std), heldout_accuracy=float(best_accuracy[i]),
        best_epoch=int(best_epoch[i]), epochs=epochs,
        heldout_history=tuple(float(a) for a in history[i]), seed=int(seeds[i]),
        run_index=int(run_indices[i]), group=name, group_index=i) for i in range(num_teachers)]
    return group, specs
