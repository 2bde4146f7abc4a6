"""The FREE outer loop: sample teachers, run the jitted iteration, evaluate, checkpoint, report.

Resume order (``run``): build/load the zoo → check it matches the config → build the abstract
state from the config → restore the newest state checkpoint if any (else a fresh state) →
trim metrics.jsonl to the restored step → continue at ``state.step``. Teacher draws use
``fold_in(sample_key, step)`` and the iteration uses ``fold_in(key, step)``, so an interrupted
and resumed run computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import jax
import numpy as np

from free_jax import checkpointing
from free_jax.inversion import invert
from free_jax.inversion.grid import recovered_grid_png, teacher_rows
from free_jax.meta.selfcheck import check_strategy
from free_jax.progress import ProgressLine
from free_jax.training import evaldata, results as results_lib
from free_jax.training.config import step_config
from free_jax.training.logging import MetricsWriter
from free_jax.training.run_setup import (
    meta_learner_input,
    random_init_meta_learner,
    state_constructor,
    train_metadata,
)
from free_jax.training.step import PhaseTimer, run_phases
from free_jax.training.validate import validate_config
from free_jax.training.workdir import kill_point, workdir_lock
from free_jax.zoo import build_or_load_zoo


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the run stopped and the last good checkpoint is kept."""


PHASE_OF_METRIC = {"inv": "recovery (FIVE)", "kd": "alignment (BELL distillation)", "replay": "replay (MAML)"}


def _check_finite(step: int, metrics: dict, checkpoint_dir: Path) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            phase = PHASE_OF_METRIC.get(name.split("_")[0], name)
            raise NonFiniteLossError(
                f"non-finite {name} = {value} at iteration {step}, in the {phase} phase. The run stopped; "
                f"the last good checkpoint in {checkpoint_dir} is kept. Lower the learning rates or "
                f"beta_align, or check the zoo, then rerun the same command to resume from it.")


def _finite_save(save, step: int, metrics: dict, tree, metadata: dict, checkpoint_dir: Path, log_every: int) -> None:
    """``save(step + 1, tree, metadata)`` unless this iteration's losses or ``tree`` hold NaN/inf.

    Checked before every save, not only at logged iterations, so no checkpoint ever holds a
    non-finite state: the losses (one host sync per save) name the phase; the state check (one
    all-finite reduction on device, inside ``save``) catches a state that went bad earlier."""
    _check_finite(step, {k: float(v) for k, v in metrics.items()}, checkpoint_dir)
    try:
        save(step + 1, tree, metadata)
    except checkpointing.NonFiniteStateError as error:
        raise NonFiniteLossError(
            f"the training state holds NaN/inf at iteration {step}, though this iteration's losses are finite: "
            f"it went bad at an earlier, unlogged iteration (log_every={log_every}). {error}. The run stopped; the "
            f"last good checkpoint in {checkpoint_dir} is kept. Rerun with --config.log_every=1 to see the phase, "
            "lower the learning rates or beta_align, or check the zoo.") from error


def run(config, workdir: str | Path, *, log=print) -> dict:
    """Trains FREE as configured in ``workdir`` (resuming if it holds a checkpoint); returns results.

    The configuration is validated before any work, and ``workdir`` is locked for the whole run
    (a second process on it gets ``WorkdirBusyError``)."""
    validate_config(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        return _run_locked(config, workdir, log=log)


def _run_locked(config, workdir: Path, *, log) -> dict:
    step_cfg = step_config(config)
    if config.self_check:   # accelerators only: the compiled meta-gradient equals the eager one
        check_strategy(config.strategy, config.meta_arch, config.meta_width, log=log)
    # Before the zoo: a query count the val classes cannot supply fails in seconds, not after pre-training.
    val_domains = evaldata.load_eval_domains(config, "val", (config.shot,), config.eval.val_episodes)
    zoo_path = Path(config.zoo_path or workdir / "zoo")
    zoo_config = config.zoo.copy_and_resolve_references()
    with zoo_config.unlocked():
        zoo_config.datasets, zoo_config.way = tuple(config.datasets), config.way
        zoo_config.data_dir, zoo_config.data_options = config.data_dir, config.data_options
    zoo = build_or_load_zoo(str(zoo_path), zoo_config)
    zoo.check_compatible(way=config.way, datasets=config.datasets, path=zoo_path)

    image_shape, mean, std = meta_learner_input(config, zoo.specs)   # no training images past this point

    make_state = state_constructor(config, zoo, image_shape, mean, std, step_cfg)
    abstract = jax.eval_shape(make_state)
    checkpoints = checkpointing.TrainingCheckpoints(workdir / "checkpoints", config.keep_checkpoints)
    best_val, best_step = -1.0, -1
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(abstract)
        expected = train_metadata(config)
        if meta.get("config") != expected:
            raise checkpointing.CheckpointError(
                f"checkpoint in {workdir} was written for {meta.get('config')}, this config is {expected}; "
                "use the original config or another --workdir")
        best_val, best_step = meta["best_val"], meta["best_step"]
        log(f"[free] resumed from iteration {int(state.step)} in {workdir}")
    else:
        state = make_state()
    start = int(state.step)

    writer = MetricsWriter(workdir, start)
    progress = ProgressLine(config.iterations, start, name="free", unit="iterations", rate_unit="it")
    sample_key = jax.random.fold_in(jax.random.key(config.seed), 7)
    timed = PhaseTimer()

    for step in range(start, config.iterations):
        warmup = step < config.warmup
        groups = zoo.sample(jax.random.fold_in(sample_key, step), config.teachers_per_iteration)
        state, metrics = run_phases(state, groups, step_cfg, warmup, timer=timed)
        if (step + 1) % config.log_every == 0 or step + 1 == config.iterations:
            values = {k: float(v) for k, v in metrics.items()}
            _check_finite(step, values, checkpoints.directory)
            writer.write(step, values)
            shown = " ".join(f"{k}={values[k]:.3f}" for k in ("inv_teacher_acc", "kd_loss", "replay_accuracy")
                             if k in values)
            progress.update(step + 1, shown + (" (warm-up)" if warmup else ""))
        done = step + 1
        if not warmup and (done % config.eval.every == 0 or done == config.iterations):
            val = evaldata.headline(timed("evaluation", lambda: evaldata.evaluate_domains(
                state.meta_learner, val_domains, config.shot, config)))
            writer.write(step, {"val_accuracy": val.mean, "val_ci95": val.ci95})
            progress.newline()
            log(f"[free] iteration {done}: meta-val {config.way}-way {config.shot}-shot {val}")
            if val.mean > best_val:
                best_val, best_step = val.mean, done
                _finite_save(checkpoints.save_best, step, metrics, state.meta_learner.params,
                             {"val_accuracy": val.mean, "step": done}, checkpoints.directory, config.log_every)
                kill_point("after_best_save", done)
        if config.grid_every and not warmup and (done % config.grid_every == 0 or done == config.iterations):
            _write_grid(state, groups, step_cfg, workdir / f"recovered_{done:06d}.png")
            kill_point("after_grid", done)
        if done % config.checkpoint_every == 0 or done == config.iterations:
            _finite_save(checkpoints.save, step, metrics, state, {"best_val": best_val, "best_step": best_step,
                                                                 "config": train_metadata(config)},
                         checkpoints.directory, config.log_every)
            kill_point("after_latest_save", done)
    progress.newline()
    writer.close()

    selected = state.meta_learner
    best = checkpoints.restore_best(abstract.meta_learner.params)
    if best is not None:
        selected = selected.replace_params(best[0])
    test_domains = evaldata.load_eval_domains(config, "test", tuple(config.eval.test_shots), config.eval.test_episodes)
    random_init = random_init_meta_learner(config, image_shape, mean, std)
    tests = {}
    for shot in config.eval.test_shots:
        tests[shot] = {"free": timed("evaluation",
                                     lambda: evaldata.evaluate_domains(selected, test_domains, shot, config)),
                       "random_init": evaldata.evaluate_domains(random_init, test_domains, shot, config)}
    report = results_lib.build_report(config, tests, best_val, best_step, timed.seconds, start)
    (workdir / "results.md").write_text(report["markdown"])
    (workdir / "results.json").write_text(json.dumps(report["json"], indent=2, allow_nan=False))
    log(report["markdown"])
    checkpoints.close()
    return report["json"]


@functools.partial(jax.jit, static_argnames=("config",))
def _grid_inversion(gen_params, groups, key, config):
    return invert(gen_params, groups, None, key, config, warmup=True)


def _write_grid(state, groups, step_cfg, path: Path) -> None:
    """PNG of the current meta-generator adapted to ``groups`` (k steps; the state is unchanged)."""
    result = _grid_inversion(state.gen_params, groups, state.iteration_key(), step_cfg.inversion)
    images, labels, confidences = [], [], []
    for group_images, group_labels, group_conf in zip(result.per_group_images, result.per_group_labels,
                                                      result.per_group_confidence):
        for t in range(group_images.shape[0]):
            sorted_t = teacher_rows(group_images[t], group_conf[t], group_labels[t], result.targets)
            images.append(sorted_t[0]), labels.append(sorted_t[1]), confidences.append(sorted_t[2])
    recovered_grid_png(np.concatenate(images), np.concatenate(labels), np.concatenate(confidences), path)
