"""Seconds per FREE iteration at CIFAR-FS-size settings, phase by phase, against PyTorch at equal work.

One group of 4 Conv4-64 teachers at 32×32×3 (random-init weights: no step's cost depends on
weight values), a Conv4-32 meta-learner, FIVE with 100 images per teacher (5-way × 20,
nz 256, ngf 64, k = 5), BELL alignment, and MAML replay of R fixed meta-batches of 10 5-way
1-shot tasks (15 queries, 5 inner steps, second order) from a uint8 bank of 64 classes × 400.
Each phase is the training loop's jitted program (``free_jax.training.step``; replay: a host loop
over one jitted meta-batch program), called through
``run_phases`` with a blocking timer, as ``free_jax.training.loop`` does. First, one
non-warm-up iteration fills the bank; before each of its phases the phase's program is lowered
and compiled alone (the reported compile time). Then iterations are timed and medians taken.
Last, the trained meta-learner's evaluation is timed per episode (5-way 1-shot, 10 SGD steps,
adaptation unrolled and scanned) against the authors' evaluation episode.
"""
from __future__ import annotations

import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from free_jax import evaluation, host_memory, memory, models
from free_jax.benchmarks import harness
from free_jax.inversion import InversionConfig
from free_jax.meta import maml
from free_jax.meta.replay import ReplayConfig
from free_jax.training.state import init_state
from free_jax.training.step import (
    PhaseTimer,
    StepConfig,
    advance,
    align_phase,
    recover_phase,
    replay_batch_phase,
    replay_phase,
    run_phases,
)
from free_jax.zoo.group import TeacherGroup

# The authors' PyTorch FREE on this CPU (docs/pytorch_reference.md), seconds.
TORCH_RECOVERY_S = 15.7        # 4 teachers × 5 generator steps, incl. PNG writes
TORCH_ALIGNMENT_S = 0.22       # one distillation step over 4 teachers
TORCH_TASK_S = 0.106           # one 2nd-order MAML replay task, incl. 80 PNG reads
TORCH_ITERATION_S = 35.0       # one iteration, its patience rule ran 150-300 tasks
TORCH_EPISODE_S = 0.106        # one evaluation episode: 10 SGD steps (1st order), 5-way 1-shot


def _settings(small: bool) -> dict:
    if small:
        return dict(shape=(16, 16, 1), teachers=2, teacher_width=8, meta_width=8, classes=10,
                    capacity=20, iterations=2, episodes=4,
                    inversion=InversionConfig(images_per_class=3, nz=16, ngf=8, k=2),
                    replay=ReplayConfig(tasks_per_batch=2, batches=2, inner_steps=2, query=2))
    return dict(shape=(32, 32, 3), teachers=4, teacher_width=64, meta_width=32, classes=64,
                capacity=400, iterations=3, episodes=40,
                inversion=InversionConfig(way=5, images_per_class=20, nz=256, ngf=64, k=5),
                replay=ReplayConfig(way=5, shot=1, query=15, tasks_per_batch=10, batches=10,
                                    inner_steps=5, inner_lr=0.01))


def _teacher_group(key, s: dict) -> TeacherGroup:
    """T random-init Conv4 teachers stacked on a leading axis, each with 5 distinct global classes."""
    module = models.build_backbone("conv4", s["inversion"].way, s["teacher_width"])
    keys = jax.random.split(key, s["teachers"] + 1)
    per_teacher = [models.init_variables(module, k, s["shape"]) for k in keys[1:]]
    rng = np.random.default_rng(0)
    class_ids = np.stack([rng.choice(s["classes"], s["inversion"].way, replace=False)
                          for _ in range(s["teachers"])]).astype(np.int32)
    channels = s["shape"][-1]
    return TeacherGroup(variables=jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *per_teacher),
                        class_ids=jnp.asarray(class_ids),
                        mean=jnp.full((s["teachers"], channels), 0.5, jnp.float32),
                        std=jnp.full((s["teachers"], channels), 0.25, jnp.float32),
                        module=module, arch="conv4", image_shape=tuple(s["shape"]))


def _evaluation_seconds(meta_learner, s: dict, inner_loop: str) -> tuple[float, float]:
    """(compile + first pass s, median s per episode) of ``evaluation.evaluate`` on s["episodes"]
    fixed 5-way 1-shot episodes with 15 queries (10 SGD steps at lr 0.01, the default chunks) of
    a synthetic split at the benchmark's image shape: the meta-validation the training loop runs."""
    split = harness.synthetic_split(20, 20, s["shape"], "val")
    episodes = evaluation.make_episodes(split, s["episodes"], way=5, shot=1, query=15, seed=0)
    images = jnp.asarray(split.images)
    score = lambda: evaluation.evaluate(meta_learner, images, episodes, steps=10, lr=0.01, inner_loop=inner_loop)
    start = time.perf_counter()
    score()
    first = time.perf_counter() - start
    return first, harness.median_seconds(score, repeats=3, warmup=0) / s["episodes"]


def run(small: bool = False) -> str:
    s = _settings(small)
    load_before = os.getloadavg()
    config = StepConfig(inversion=s["inversion"], replay=s["replay"])
    rep, inv = config.replay, config.inversion
    channels = s["shape"][-1]
    groups = [_teacher_group(jax.random.key(1), s)]
    state = init_state(jax.random.key(0), meta_arch="conv4", meta_width=s["meta_width"], way=inv.way,
                       image_shape=s["shape"], mean=[0.5] * channels, std=[0.25] * channels,
                       inversion=inv, outer_lr=config.outer_lr, num_classes_total=s["classes"],
                       bank_capacity=s["capacity"], bank_dtype="uint8")

    # Fill iteration (not warm-up): compile each phase alone, then run it (the bank is filled).
    compile_s = {}
    start = time.perf_counter()
    compile_s["recovery"], _ = harness.time_compile(recover_phase, state, groups, config, False)
    state, recovered, _ = harness.block(recover_phase(state, groups, config, False))
    memory.check_can_sample(state.bank, rep.way, rep.shot, rep.query)
    compile_s["alignment"], _ = harness.time_compile(align_phase, state, groups, recovered.per_group_images, config)
    state, _ = harness.block(align_phase(state, groups, recovered.per_group_images, config))
    compile_s["replay"], _ = harness.time_compile(replay_batch_phase, state, jnp.asarray(0, jnp.int32), config)
    state, _ = harness.block(replay_phase(state, config))
    state = advance(state)
    fill_s = time.perf_counter() - start

    timer = PhaseTimer()

    totals = []
    for _ in range(s["iterations"]):
        begin = time.perf_counter()
        state, metrics = run_phases(state, groups, config, False, timer=timer)
        harness.block(state)
        totals.append(time.perf_counter() - begin)
    finite = all(np.isfinite(float(v)) for v in metrics.values())
    released = (f"yes, {host_memory.releases['count']} times" if host_memory.releases["count"]
                else "no (free_jax.host_memory.release_after_compiles not on)")
    episode = {loop: _evaluation_seconds(state.meta_learner, s, loop) for loop in ("unroll", "scan")}
    median = {name: statistics.median(values) for name, values in timer.seconds.items()}
    total = statistics.median(totals)
    tasks = rep.tasks_per_batch * rep.batches

    torch = {"recovery": TORCH_RECOVERY_S, "alignment": TORCH_ALIGNMENT_S,
             "replay": TORCH_TASK_S * tasks, "meta-batch": TORCH_TASK_S * rep.tasks_per_batch}
    torch_total = torch["recovery"] + torch["alignment"] + torch["replay"]
    ratio = lambda ours, theirs: f"{theirs / ours:.2f}×"
    rows = [
        [f"recovery (FIVE: {s['teachers']} teachers × k = {inv.k} steps, meta-update, bank add)",
         f"{median['recovery']:.2f}", f"{compile_s['recovery']:.1f}", f"{torch['recovery']:.2f}",
         ratio(median['recovery'], torch['recovery'])],
        [f"alignment (BELL distillation over {s['teachers']} teachers + Adam)", f"{median['alignment']:.2f}",
         f"{compile_s['alignment']:.1f}", f"{torch['alignment']:.2f}", ratio(median['alignment'], torch['alignment'])],
        [f"replay (R = {rep.batches} meta-batches × {rep.tasks_per_batch} tasks = {tasks} 2nd-order MAML tasks)",
         f"{median['replay']:.2f}", f"{compile_s['replay']:.1f}", f"{torch['replay']:.2f}",
         ratio(median['replay'], torch['replay'])],
        [f"  per meta-batch (replay / R; {rep.tasks_per_batch} tasks, sampling + meta-gradient + Adam)",
         f"{median['replay'] / rep.batches:.3f}", "-", f"{torch['meta-batch']:.3f}",
         ratio(median['replay'] / rep.batches, torch['meta-batch'])],
        ["**one iteration (median of whole iterations)**", f"**{total:.2f}**",
         f"{sum(compile_s.values()):.1f}", f"{torch_total:.2f}", f"**{ratio(total, torch_total)}**"],
    ] + [[f"evaluation per episode (5-way 1-shot, 10 steps, eval.inner_loop={loop})", f"{per_episode:.4f}",
          f"{first:.1f} (incl. 1st pass)", f"{TORCH_EPISODE_S:.3f}", ratio(per_episode, TORCH_EPISODE_S)]
         for loop, (first, per_episode) in episode.items()]
    table = harness.markdown_table(
        ["phase", "median s (this CPU)", "compile s (first call)",
         "PyTorch s at equal work (docs/pytorch_reference.md)", "speed vs PyTorch"], rows)
    load_after = os.getloadavg()
    per_iteration = ", ".join(f"{t:.1f}" for t in totals)
    task_s = median["replay"] / tasks  # replay seconds per task
    fixed_s = median["recovery"] + median["alignment"]  # the rest of an iteration
    return f"""{s['teachers']} Conv4-{s['teacher_width']} teachers at {s['shape'][0]}×{s['shape'][1]}×{channels} as one
group (**random-init weights**: timing does not depend on weight values), meta-learner
Conv4-{s['meta_width']}; FIVE: {inv.batch_size} images per teacher
({inv.way}-way × {inv.images_per_class}), nz {inv.nz},
ngf {inv.ngf}, k = {inv.k}; replay: R = {rep.batches} fixed meta-batches × {rep.tasks_per_batch} tasks, {rep.way}-way
{rep.shot}-shot, {rep.query} queries, {rep.inner_steps} inner steps at lr {rep.inner_lr}, 2nd order, task
mapping "{rep.strategy}" ({maml.task_strategy(rep.strategy)}, each task's gradient inside it); uint8 bank of
{s['classes']} classes × {s['capacity']}.
Evaluation: the meta-learner after these iterations on {s['episodes']} fixed episodes of a synthetic
split at {s['shape'][0]}×{s['shape'][1]}×{channels} (15 queries per class, 10 SGD steps at lr 0.01, first order,
chunks of {evaluation.default_chunk_size()} episodes), median of 3 passes per episode; its compile column is the
first pass.
Medians over {s['iterations']} non-warm-up iterations (per iteration: {per_iteration} s) after one
non-warm-up iteration that filled the bank ({fill_s:.0f} s including the compiles); each phase
is timed with a blocking timer, as the training loop does. Compile = lower + compile of each
phase's jitted program alone, before its first call. Peak RSS of the process:
{harness.peak_rss_mib():.0f} MiB (PyTorch: 1.36 GB; freed memory returned to the OS after big compiles:
{released}). Metrics finite: {finite}.

{table}

PyTorch at equal work, from docs/pytorch_reference.md (the authors' code on this CPU, ±30 %):
recovery per iteration {TORCH_RECOVERY_S} s (incl. its PNG writes); one alignment/distillation step
{TORCH_ALIGNMENT_S} s; one 2nd-order MAML replay task {TORCH_TASK_S} s (incl. PNG reads) × {tasks} tasks.
Speed > 1× means faster than PyTorch. Note the replay budget: here a fixed R × {rep.tasks_per_batch} =
{tasks} tasks; the released code's patience rule ran 150-300 tasks
({TORCH_TASK_S * 150:.0f}-{TORCH_TASK_S * 300:.0f} s), for
≈ {TORCH_ITERATION_S:.0f} s per iteration. At our per-task replay cost, 150-300 tasks would take
{task_s * 150:.0f}-{task_s * 300:.0f} s and an iteration
{fixed_s + task_s * 150:.0f}-{fixed_s + task_s * 300:.0f} s.
{harness.load_line(load_before, load_after)}
"""
