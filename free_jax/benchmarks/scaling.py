"""Seconds per FREE phase over 1, 2 and 4 forced CPU devices and 1 or 2 processes (strong scaling),
and the 1-device vs all-devices comparison of ``experiments/compare_devices.py``.

Work is fixed: one group of 4 teachers and replay meta-batches of 8 tasks, split over the
``tasks`` mesh (``free_jax.sharding``). A device count is fixed when JAX starts, so every
configuration runs in fresh worker processes (``python -m free_jax.benchmarks.scaling WORKER ...``);
two-process configurations start two workers that meet through ``jax.distributed`` on
localhost (gloo collectives). Rank 0 prints one JSON line of median phase seconds.

On a machine with fewer cores than devices the forced CPU devices share the same cores, so no
speed-up is possible: the table then shows the cost of splitting (collectives, per-device
programs, padding), not a gain. On one accelerator per device the split work runs in parallel.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from free_jax import distributed, evaluation, sharding
from free_jax.benchmarks import harness

CONFIGS = ((1, 1), (2, 1), (4, 1), (1, 2), (2, 2))     # (devices per process, processes)
PHASES = ("recovery", "alignment", "replay", "evaluation")


def _settings(small: bool) -> dict:
    from free_jax.benchmarks import free
    s = free._settings(small)
    s["teachers"] = 4
    s["replay"] = dataclasses.replace(s["replay"], tasks_per_batch=8, batches=2 if small else 4)
    s["episodes"] = 8 if small else 32
    return s


def _setup(small: bool, mesh):
    """(state, groups, step config, eval images, episodes), placed on ``mesh``."""
    from free_jax.benchmarks import free
    from free_jax.training.state import init_state
    from free_jax.training.step import StepConfig
    s = _settings(small)
    config = sharding.with_mesh(StepConfig(inversion=s["inversion"], replay=s["replay"]), mesh)
    channels = s["shape"][-1]
    state = init_state(jax.random.key(0), meta_arch="conv4", meta_width=s["meta_width"], way=s["inversion"].way,
                       image_shape=s["shape"], mean=[0.5] * channels, std=[0.25] * channels,
                       inversion=s["inversion"], outer_lr=config.outer_lr, num_classes_total=s["classes"],
                       bank_capacity=s["capacity"], bank_dtype="uint8")
    rng = np.random.default_rng(0)
    way, per_class = s["replay"].way, s["replay"].shot + s["replay"].query
    images = rng.integers(0, 256, (way * 4 * per_class, *s["shape"]), dtype=np.uint8)
    classes = (np.arange(s["episodes"])[:, None] + np.arange(way)[None, :]) % (way * 4)
    episodes = evaluation.EpisodeSet(classes[..., None] * per_class + np.arange(per_class), way, s["replay"].shot,
                                     s["replay"].query, 0)
    return (sharding.replicate(state, mesh), sharding.replicate([free._teacher_group(jax.random.key(1), s)], mesh),
            config, images, episodes)


def worker(devices_per_process: int, processes: int, rank: int, address: str, small: bool) -> None:
    """Times each phase on the mesh over every device of every process; rank 0 prints a JSON line."""
    from free_jax.training.step import PhaseTimer, run_phases
    if processes > 1:
        distributed.initialize(address, processes, rank)
    mesh = sharding.make_mesh() if len(jax.devices()) > 1 else None
    state, groups, config, images, episodes = _setup(small, mesh)
    timer = PhaseTimer()
    state, _ = run_phases(state, groups, config, False)                      # compiles; fills the bank
    evaluate = lambda: evaluation.evaluate(state.meta_learner, images, episodes, steps=2 if small else 10, lr=0.01,
                                           chunk_size=8, strategy="loop", mesh=mesh)
    evaluate()                                                               # compiles
    iterations = 2 if small else 3
    totals = []
    for _ in range(iterations):
        begin = time.perf_counter()
        state, metrics = run_phases(state, groups, config, False, timer=timer)
        timer("evaluation", evaluate)
        totals.append(time.perf_counter() - begin)
    result = {name: statistics.median(values) for name, values in timer.seconds.items()}
    result["iteration"] = statistics.median(totals)
    result["finite"] = bool(all(np.isfinite(float(v)) for v in metrics.values()))
    result["devices"] = len(jax.devices())
    if distributed.is_primary():
        print("RESULT " + json.dumps(result), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _worker_env(devices: int) -> dict:
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])}


def measure(devices_per_process: int, processes: int, small: bool, timeout: float = 1800) -> dict:
    """Runs the workers of one configuration; returns rank 0's medians."""
    address = f"localhost:{_free_port()}"
    workers = [subprocess.Popen([sys.executable, "-m", "free_jax.benchmarks.scaling", "worker",
                                 str(devices_per_process), str(processes), str(rank), address, str(int(small))],
                                env=_worker_env(devices_per_process), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for rank in range(processes)]
    outputs = []
    try:
        outputs = [w.communicate(timeout=timeout)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for rank, (w, output) in enumerate(zip(workers, outputs)):
        if w.returncode != 0:
            raise RuntimeError(f"scaling worker {rank} of {devices_per_process} devices × {processes} processes "
                               f"failed:\n{output[-3000:]}")
    line = next(line for line in outputs[0].splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def run(small: bool = False) -> str:
    s = _settings(small)
    inv, rep = s["inversion"], s["replay"]
    results = {config: measure(*config, small=small) for config in CONFIGS}
    base = results[(1, 1)]["iteration"]
    rows = [[processes, per_process * processes, *(f"{r[name]:.2f}" for name in PHASES), f"{r['iteration']:.2f}",
             f"{base / r['iteration']:.2f}×", r["finite"]]
            for (per_process, processes), r in results.items()]
    table = harness.markdown_table(["processes", "devices (all)", *(f"{p} s" for p in PHASES), "iteration s",
                                    "speed-up vs 1 device", "finite"], rows)
    return f"""Strong scaling on forced CPU devices (`--xla_force_host_platform_device_count`), one or two
processes on this machine (`jax.distributed` on localhost, gloo). Fixed work per iteration:
{s['teachers']} Conv4-{s['teacher_width']} teachers at {s['shape'][0]}×{s['shape'][1]}×{s['shape'][-1]} (FIVE:
{inv.batch_size} images each, k = {inv.k}), {rep.batches} replay meta-batches × {rep.tasks_per_batch} tasks
({rep.inner_steps} inner steps, 2nd order), and {s['episodes']} evaluation episodes; teachers, tasks and
episodes are split over the devices (`free_jax.sharding`), alignment is sequential and replicated.
Medians over {2 if small else 3} iterations after a compiling one.

{table}

**This machine has {os.cpu_count()} CPU cores**: every forced device runs on the same cores, so more
devices cannot be faster here; the rows measure what splitting costs (collectives, one program
per device, gloo between processes), not what it gains. The split itself is shown by per-device
FLOPs in tests/test_mesh.py (¼ on 4 devices); speed-ups need one core set or accelerator per device.
"""


def compare(small: bool = False, tolerance: float = 1e-4) -> tuple[str, bool]:
    """One FREE iteration and one evaluation on one device and on all visible devices (float32).

    Returns (report, ok): the relative L2 difference of the state and metrics, and whether it is
    within ``tolerance`` (float32 sums in another order differ by ~1e-6)."""
    from free_jax.training.step import run_phases
    devices = len(jax.devices())
    outcomes = {}
    for mesh in (None, sharding.make_mesh() if devices > 1 else None):
        state, groups, config, images, episodes = _setup(small, mesh)
        state, metrics = run_phases(state, groups, config, False)
        accuracies = evaluation.evaluate(state.meta_learner, images, episodes, steps=2, lr=0.01, chunk_size=8,
                                         strategy="auto", mesh=mesh).accuracies
        outcomes[sharding.mesh_size(mesh)] = (state, metrics, accuracies)
    (one, one_metrics, one_acc), (every, every_metrics, every_acc) = outcomes[1], outcomes[devices]
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(leaf, np.float64))
                                        for leaf in jax.tree_util.tree_leaves(tree)])
    error = lambda a, b: float(np.linalg.norm(flat(a) - flat(b)) / max(np.linalg.norm(flat(b)), 1e-30))
    errors = {"meta-learner": error(every.meta_learner.params, one.meta_learner.params),
              "generator": error(every.gen_params, one.gen_params),
              "bank": error(every.bank.images.astype(jnp.float32), one.bank.images.astype(jnp.float32)),
              "metrics": error(every_metrics, one_metrics)}
    ok = all(value <= tolerance for value in errors.values())
    differing = int(np.sum(every_acc != one_acc))          # float32: an argmax may flip (reported, not judged)
    lines = [f"1 device vs {devices} ({jax.default_backend()}), one iteration + {episodes.num_episodes} episodes:"]
    lines += [f"  {name}: relative L2 difference {value:.2e}" for name, value in errors.items()]
    lines.append(f"  evaluation: {differing} of {episodes.num_episodes} episode accuracies differ "
                 f"(mean {np.mean(one_acc):.2f} vs {np.mean(every_acc):.2f} %)")
    lines.append(f"  {'OK' if ok else 'FAIL'} (tolerance {tolerance:g})" +
                 ("" if devices > 1 else "; only one device is visible, so both runs used it"))
    return "\n".join(lines), ok


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "worker":
        worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], bool(int(sys.argv[6])))
    else:
        raise SystemExit("usage: python -m free_jax.benchmarks.scaling worker DEVICES PROCESSES RANK ADDRESS SMALL")
