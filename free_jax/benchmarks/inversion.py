"""FIVE vs per-teacher fresh-generator recovery: steps and seconds to a teacher accuracy.

On a small glyph zoo (Conv4 teachers), the generator is meta-trained for some warm-up
iterations (no meta-learner, as FREE's first W iterations) on training teachers; then, for
each *unseen* teacher, the meta-generator and a freshly initialised generator are adapted with
the *same* jitted single-step function (``generator_inversion_step``), and the teacher's
accuracy on the clean recovered images is recorded after every step. Time to a target
accuracy X = steps to X × the median step time (the same program for both, so the ratio is the
step ratio; the wall time of each run is reported as well). Throughput: one jitted
``adapt_generator`` call (k = 5, T teachers) in recovered images per second, compile separate.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from free_jax.benchmarks import harness
from free_jax.data import load_split
from free_jax.inversion import (
    InversionConfig,
    adapt_generator,
    generate,
    init_generator,
    meta_train_warmup,
    relative_targets,
    warmup_meta_step,
)
from free_jax.inversion.baselines import generator_inversion_step, init_generator_inversion, teacher_accuracy
from free_jax.zoo.pretrain import pretrain_teachers

# FIVE at CPU scale (16 px glyphs, Conv4-16 teachers), shared with
# tests/test_inversion_five_claim.py: a small generator, inner/outer learning rates larger than
# the paper's 1e-3 so that a few hundred meta-iterations suffice, Reptile, and the crop padding scaled
# with the image side (docs/algorithm.md §2.1: 4 px at 32 px).
CPU_CLAIM_CONFIG = InversionConfig(images_per_class=4, nz=32, ngf=16, flip=False, crop_padding=2,
                                   gen_lr=1e-2, z_lr=1e-2, meta_lr=3e-3, meta_update="reptile")


def _settings(small: bool) -> dict:
    """``CPU_CLAIM_CONFIG`` with 5 training and 3 unseen teachers; tiny shapes at ``small``."""
    if small:
        return dict(size=16, teachers=4, unseen=1, epochs=2, meta_iterations=3, fresh_steps=10,
                    draws=2, per_iteration=2,
                    config=InversionConfig(images_per_class=2, nz=16, ngf=8, k=2, flip=False))
    return dict(size=16, teachers=8, unseen=3, epochs=40, meta_iterations=300, fresh_steps=200,
                draws=8, per_iteration=4, config=CPU_CLAIM_CONFIG)


def _curve(step_fn, acc_fn, state, steps: int, key):
    """Accuracy after 0..steps steps and the wall seconds of the steps alone."""
    accuracies, seconds = [float(acc_fn(state))], 0.0
    for index in range(steps):
        start = time.perf_counter()
        state = harness.block(step_fn(state, jax.random.fold_in(key, index)))
        seconds += time.perf_counter() - start
        accuracies.append(float(acc_fn(state)))
    return np.asarray(accuracies), seconds


@dataclasses.dataclass(frozen=True)
class RecoveryCurves:
    """One teacher's accuracy on the clean recovered images after 0, 1, … inversion steps.

    meta: (k + 1,) from the meta-generator; fresh: (fresh_steps + 1,) from a fresh generator; both
    averaged over the draws. meta_wall / fresh_wall: median wall seconds of one run's steps;
    step_seconds: median time of one step of the shared program; compile_seconds: its compile."""

    meta: np.ndarray
    fresh: np.ndarray
    meta_wall: float
    fresh_wall: float
    step_seconds: float
    compile_seconds: float


def recovery_curves(gen_params, fresh_params, group, teacher_index: int, config: InversionConfig, *,
                    draws: int, fresh_steps: int) -> RecoveryCurves:
    """FIVE vs a fresh generator on teacher ``teacher_index`` of ``group`` (a ``TeacherGroup``).

    Both start from the same latent codes of each draw and are adapted by the same jitted
    single-step program (``generator_inversion_step``): ``config.k`` steps from ``gen_params``
    (the meta-generator) and ``fresh_steps`` from ``fresh_params`` (a newly initialised one)."""
    variables, _, mean, std = group.unstacked(teacher_index)
    image_shape, targets = tuple(group.image_shape), relative_targets(config)
    step = jax.jit(lambda state, key: generator_inversion_step(
        state, key, variables, mean, std, module=group.module, image_shape=image_shape, config=config)[0])
    acc = jax.jit(lambda state: teacher_accuracy(
        generate(state.gen_params, state.z, config), variables, mean, std, targets,
        module=group.module, image_shape=image_shape)[0])
    meta_curves, fresh_curves, meta_walls, fresh_walls = [], [], [], []
    compile_seconds = None
    for draw in range(draws):      # latent codes and augmentation: one draw each
        key = jax.random.key(1000 + 100 * teacher_index + draw)
        z = jax.random.normal(key, (config.batch_size, config.nz))
        meta_state = init_generator_inversion(gen_params, z, config)
        fresh_state = init_generator_inversion(fresh_params, z, config)
        if draw == 0:
            compile_seconds, _ = harness.time_compile(step, meta_state, key)
        for state, steps, curves, walls in ((meta_state, config.k, meta_curves, meta_walls),
                                            (fresh_state, fresh_steps, fresh_curves, fresh_walls)):
            curve, wall = _curve(step, acc, state, steps, key)
            curves.append(curve)
            walls.append(wall)
    step_seconds = harness.median_seconds(lambda: step(meta_state, key), repeats=5)
    return RecoveryCurves(np.mean(meta_curves, axis=0), np.mean(fresh_curves, axis=0), float(np.median(meta_walls)),
                          float(np.median(fresh_walls)), float(step_seconds), float(compile_seconds))


def _first_reaching(curve: np.ndarray, target: float):
    hits = np.flatnonzero(curve >= target - 1e-6)
    return int(hits[0]) if hits.size else None


def run(small: bool = False) -> str:
    s = _settings(small)
    config: InversionConfig = s["config"]
    split = load_split("glyphs", "train", image_size=s["size"], channels=1)
    load_before = os.getloadavg()
    start = time.perf_counter()
    group, specs = pretrain_teachers(split, "conv4", s["teachers"], config.way, s["epochs"],
                                     jax.random.key(0), width=16)
    zoo_seconds = time.perf_counter() - start
    n_train = s["teachers"] - s["unseen"]
    image_shape = tuple(group.image_shape)
    targets = relative_targets(config)

    # Meta-training (warm-up mode), per_iteration training teachers per iteration drawn from n_train.
    def teachers_of(_):
        ids = jnp.asarray(rng.integers(0, n_train, s["per_iteration"]))
        return [jax.tree_util.tree_map(lambda leaf: leaf[ids], group)]

    gen_params, gen_opt = init_generator(jax.random.key(1), config, image_shape)
    fresh_params = gen_params
    rng = np.random.default_rng(0)
    meta_compile, meta_step_c = harness.time_compile(warmup_meta_step, gen_params, gen_opt, teachers_of(-1),
                                                     jax.random.key(0), config=config)
    start = time.perf_counter()
    train_acc = []
    gen_params, gen_opt = meta_train_warmup(
        gen_params, gen_opt, teachers_of, s["meta_iterations"], config,
        key_of=lambda iteration: jax.random.key(100 + iteration), step=meta_step_c,
        on_iteration=lambda _, metrics: train_acc.append(metrics["teacher_acc"]))
    harness.block(gen_params)
    meta_seconds = time.perf_counter() - start
    train_acc = np.asarray(jax.device_get(train_acc))

    # Per unseen teacher: the same single-step program from the meta and from a fresh generator.
    rows, ratios = [], []
    step_compile = None
    for teacher_index in range(n_train, s["teachers"]):
        curves = recovery_curves(gen_params, fresh_params, group, teacher_index, config,
                                 draws=s["draws"], fresh_steps=s["fresh_steps"])
        step_compile = curves.compile_seconds if step_compile is None else step_compile  # the first teacher's
        meta_curve, fresh_curve = curves.meta, curves.fresh
        meta_wall, fresh_wall, step_time = curves.meta_wall, curves.fresh_wall, curves.step_seconds
        target = min(0.9, np.floor(meta_curve[-1] * 100) / 100)
        meta_steps, fresh_steps = _first_reaching(meta_curve, target), _first_reaching(fresh_curve, target)
        ratio = (fresh_steps / meta_steps) if (fresh_steps and meta_steps) else None
        if ratio:
            ratios.append(ratio)
        fmt = lambda n: "not reached" if n is None else f"{n} ({n * step_time:.2f} s)"
        rows.append([teacher_index, f"{target:.0%}", f"{meta_curve[-1]:.2f}",
                     f"{fresh_curve[config.k]:.2f}", fmt(meta_steps),
                     fmt(fresh_steps) if fresh_steps is not None else f"not in {s['fresh_steps']}",
                     f"{fresh_curve[-1]:.2f}", "-" if ratio is None else f"{ratio:.1f}×",
                     f"{meta_wall:.2f} / {fresh_wall:.2f}"])

    # Throughput of FIVE itself: one jitted k-step adaptation of the teachers of one iteration.
    sampled = jax.tree_util.tree_map(lambda leaf: leaf[:s["per_iteration"]], group)
    z_sampled = jax.random.normal(jax.random.key(5), (sampled.size, config.batch_size, config.nz))
    adapt = jax.jit(lambda p, key: adapt_generator(p, sampled, z_sampled, targets, key, config).images)
    adapt_compile, adapt_c = harness.time_compile(adapt, gen_params, jax.random.key(0))
    adapt_time = harness.median_seconds(lambda: adapt_c(gen_params, jax.random.key(0)), repeats=3)

    ratio_text = (f"median {np.median(ratios):.1f}× (range {min(ratios):.1f}–{max(ratios):.1f}×)"
                  if ratios else "no teacher where both reached the target")
    table = harness.markdown_table(
        ["unseen teacher", "target X", "meta acc @k=5", "fresh acc @5", "meta steps to X",
         f"fresh steps to X (≤{s['fresh_steps']})", f"fresh acc @{s['fresh_steps']}",
         "ratio (fresh/meta)", "wall s meta / fresh run"], rows)
    return f"""Zoo: {s['teachers']} Conv4-16 teachers on glyphs {s['size']}×{s['size']}×1, 5-way,
{s['epochs']} epochs (held-out accuracy {np.mean([sp.heldout_accuracy for sp in specs]):.2f} mean;
pre-training {zoo_seconds:.0f} s);
{n_train} training teachers, {s['unseen']} unseen. Generator nz {config.nz}, ngf {config.ngf}, B = {config.batch_size}
images per teacher, inner Adam lr {config.gen_lr} (φ and z), k = {config.k}, crop padding {config.crop_padding},
no flips (glyphs). Meta-training: {s['meta_iterations']} warm-up iterations
({s['per_iteration']} teachers each, {config.meta_update},
meta lr {config.meta_lr}) in {meta_seconds:.0f} s (compile {meta_compile:.1f} s); teacher accuracy at the adapted
generator over the first / last 20 iterations {train_acc[:20].mean():.2f} / {train_acc[-20:].mean():.2f}.

Accuracy = the teacher's on the clean recovered images, averaged over {s['draws']} draws of latent
codes and augmentation per teacher (the curves are averaged, then read). Target X per teacher =
the meta-generator's mean accuracy after k = 5 steps rounded down to 1 %, capped at 90 %. Times
are steps × the median single-step time of the shared program; compile of that program
{step_compile:.1f} s; wall = median over the draws of one run (k steps, or all fresh steps).

{table}

**Recovery speed-up (fresh-generator steps / meta-generator steps to the same accuracy): {ratio_text}.**
The paper claims about 20× against 200-step per-teacher inversion.

FIVE throughput (one jitted call: {sampled.size} teachers × k = {config.k} steps + final evaluation,
{sampled.size * config.batch_size} images): {adapt_time:.2f} s →
{sampled.size * config.batch_size / adapt_time:.0f} recovered images/s;
compile {adapt_compile:.1f} s.

{harness.load_line(load_before, os.getloadavg())}
"""
