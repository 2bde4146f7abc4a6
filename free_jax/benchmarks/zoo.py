"""Zoo pre-training throughput: vectorised chunks vs a sequential loop over one-teacher programs.

Both arms run ``pretrain_teachers`` on the same teachers (same seeds, so the same work): the
vectorised arm with the backend's default strategy and chunk, the sequential arm with
``chunk_size=1`` (one jitted single-teacher epoch program, called teacher after teacher). Each arm
is warmed up on one chunk first; that warm-up minus one steady chunk-epoch is reported as
compile time. Figures are teachers trained per minute at the epochs used and teacher-epochs per
second (divide by 60 epochs for full-size teachers).

A second table times one teacher-epoch at the authors' work: 2,400 training images of 32×32×3
per teacher (a synthetic split of 5 classes × 600: timing does not depend on pixel values),
against the authors' PyTorch code on this CPU (2.2 s per epoch, docs/pytorch_reference.md).
"""
from __future__ import annotations

import os
import tempfile
import time

import jax
import numpy as np

from free_jax.benchmarks import harness
from free_jax.zoo import pretrain_teachers
from free_jax.zoo.pretrain import TRAIN_FRACTION, resolve_chunk

TORCH_TEACHER_EPOCH_S = 2.2     # Conv4, 2,400 images of 32×32×3, one epoch (docs/pytorch_reference.md)


def _split(small: bool):
    """The glyph train split, rendered into an empty cache; returns (split, render seconds)."""
    from free_jax.data import load_split
    options = (dict(image_size=16, channels=1, renderings_per_class=10) if small
               else dict(image_size=32, channels=3))
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        split = load_split("glyphs", "train", data_dir=cache, **options)
        return split, time.perf_counter() - start


def _arm(split, num_teachers, epochs, width, chunk_size, strategy):
    """(compile_s, steady seconds for num_teachers × epochs, median held-out accuracy)."""
    key = jax.random.key(0)
    marks = []
    start = time.perf_counter()
    pretrain_teachers(split, "conv4", chunk_size, 5, 1, key, width=width, chunk_size=chunk_size,
                      strategy=strategy, progress=lambda e: marks.append(e["elapsed_s"]))
    warmup = time.perf_counter() - start
    marks.clear()
    start = time.perf_counter()
    _, specs = pretrain_teachers(split, "conv4", num_teachers, 5, epochs, key, width=width,
                                 chunk_size=chunk_size, strategy=strategy,
                                 progress=lambda e: marks.append(e["elapsed_s"]))
    seconds = time.perf_counter() - start
    steady_chunk_epoch = float(np.median(np.diff([0.0] + marks)))
    compile_s = max(warmup - steady_chunk_epoch, 0.0)
    return compile_s, seconds, float(np.median([s.heldout_accuracy for s in specs]))


def equal_work(small: bool) -> str:
    """Seconds per teacher-epoch at 2,400 training images per teacher (small: 30) vs PyTorch."""
    per_class, epochs = (8, 2) if small else (600, 2)
    split = harness.synthetic_split(5, per_class, (32, 32, 3), "train")
    num_teachers, width = (2, 8) if small else (4, 64)
    strategy, chunk = resolve_chunk("auto", num_teachers, None)
    compile_s, seconds, _ = _arm(split, num_teachers, epochs, width, chunk, strategy)
    per_epoch = seconds / (num_teachers * epochs)
    train_images = int(np.round(TRAIN_FRACTION * per_class)) * 5      # as pre-training splits each class
    table = harness.markdown_table(
        ["arm", "train images per teacher", "s per teacher-epoch", "PyTorch s per epoch", "speed vs PyTorch",
         "compile s"],
        [[f"vectorised ({strategy}, chunks of {chunk}), Conv4-{width}, batch 128", train_images,
          f"{per_epoch:.2f}", f"{TORCH_TEACHER_EPOCH_S:.1f}", f"{TORCH_TEACHER_EPOCH_S / per_epoch:.2f}×",
          f"{compile_s:.1f}"]])
    return (f"Equal work to the authors' pre-training: {num_teachers} Conv4-{width} teachers × {epochs} epochs on "
            f"a synthetic 5-class split of {per_class} images per class at 32×32×3 (80 % train: "
            f"{train_images} images per teacher, ⌈{train_images}/128⌉ steps per epoch).\n\n{table}")


def run(small: bool) -> str:
    load_before = os.getloadavg()
    split, render_seconds = _split(small)
    num_teachers, epochs, width = (4, 1, 8) if small else (100, 1, 64)
    strategy, chunk = resolve_chunk("auto", num_teachers, None)
    rows = []
    for label, arm_chunk, arm_strategy in (
            (f"vectorised ({strategy}, chunks of {chunk})", chunk, strategy),
            ("sequential loop over a jitted 1-teacher trainer", 1, "loop")):
        compile_s, seconds, accuracy = _arm(split, num_teachers, epochs, width, arm_chunk, arm_strategy)
        rows.append([label, f"{num_teachers / seconds * 60:.1f}", f"{num_teachers * epochs / seconds:.2f}",
                     f"{seconds:.1f}", f"{compile_s:.1f}", f"{harness.peak_rss_mib():.0f}",
                     f"{accuracy:.3f}"])
    table = harness.markdown_table(
        ["arm", "teachers/min", "teacher-epochs/s", "run s", "compile s", "peak RSS MiB (cumulative)",
         "median held-out"], rows)
    return (f"{num_teachers} Conv4 teachers (width {width}), 5-way, glyphs {split.image_shape}, "
            f"{epochs} epoch(s) each, batch 128 ({split.images.shape[0]} train-split images, "
            f"{(split.labels == 0).sum()} per class; 80 % of a teacher's 5 classes train it; "
            f"rendering the split into an empty cache took {render_seconds:.1f} s).\n\n"
            f"{table}\n\nAt the paper's 60 epochs a teacher costs 60 teacher-epochs: divide "
            "teachers/min by 60 / epochs. Compile time is excluded from the run time. Peak RSS is "
            "the process's high-water mark so far (the second row includes the first).\n\n"
            + equal_work(small) + "\n\n" + harness.load_line(load_before, os.getloadavg()))
