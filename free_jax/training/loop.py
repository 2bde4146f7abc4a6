"""The FREE outer loop: sample teachers, run the jitted iteration, evaluate, checkpoint, report.

Resume order (``run``): build/load the zoo → check it matches the config → build the abstract
state from the config → restore the newest state checkpoint if any (else a fresh state) →
trim metrics.jsonl to the restored step → continue at ``state.step``. Teacher draws use
``fold_in(sample_key, step)`` and the iteration uses ``fold_in(key, step)``, so an interrupted
and resumed run computes exactly what an uninterrupted one does.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from free_jax import checkpointing, distributed, sharding
from free_jax.inversion import relative_targets
from free_jax.inversion.grid import inversion_rows, recovered_grid_png
from free_jax.meta.selfcheck import check_strategy
from free_jax.progress import ProgressLine
from free_jax.training import evaldata, hosts, methods, results as results_lib
from free_jax.training.config import step_config, zoo_config
from free_jax.training.run_setup import (
    meta_learner_input,
    random_init_meta_learner,
    state_constructor,
    train_metadata,
)
from free_jax.training.step import PhaseTimer, iteration_program, recover_phase, run_iteration
from free_jax.training.validate import validate_config
from free_jax.training.workdir import kill_point
from free_jax.zoo import build_or_load_zoo


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the run stopped and the last good checkpoint is kept."""


PHASE_OF_METRIC = {"inv": "recovery", "kd": "alignment (BELL distillation)", "replay": "replay (MAML)"}


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


def run(config, workdir: str | Path, *, log=print, on_evaluation=None) -> dict:
    """Trains FREE as configured in ``workdir`` (resuming if it holds a checkpoint); returns results.

    The configuration is validated before any work, and ``workdir`` is locked for the whole run
    (a second process on it gets ``WorkdirBusyError``). A rerun of a finished run (same config,
    latest checkpoint at ``config.iterations``) prints and returns its results without evaluating.
    ``on_evaluation(step, meta_learner)``, if given, is called after each meta-validation (e.g. to
    meta-test every evaluated meta-learner: experiments/compare.py's compatibility figure)."""
    validate_config(config)
    config = sharding.scale_with_devices(config, sharding.config_mesh(config))   # weak scaling, if asked
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    with hosts.lock(workdir):                    # multi-process: process 0 locks, logs and writes files
        return _run_locked(config, workdir, log=hosts.log_function(log), on_evaluation=on_evaluation)


def first_of_its_kind(step: int, start: int, warmup: int) -> bool:
    """Whether iteration ``step`` is the first this process runs of its kind (warm-up, or full):
    it compiles its program (and the first evaluation or grid may fall in it), so the progress
    line's rate restarts after it; otherwise the first ETAs are off by the compile time (20×)."""
    return step == start or step == max(start, warmup)


def finished_results(config, workdir: Path) -> dict | None:
    """The results of a finished run of this same config in ``workdir``, or None.

    Finished: results.json and results.md were written by a run of a config equal to this one
    (``results_lib.config_record``) and, for a method that trains, the newest state checkpoint is
    at ``config.iterations``."""
    results_path, markdown_path = workdir / "results.json", workdir / "results.md"
    if not (results_path.is_file() and markdown_path.is_file()):
        return None
    try:
        results = json.loads(results_path.read_text())
    except ValueError:
        return None
    if results.get("config") != results_lib.config_record(config):
        return None
    if not methods.method_of(config).trains:
        return results
    if not (workdir / "checkpoints").is_dir():
        return None
    checkpoints = checkpointing.TrainingCheckpoints(workdir / "checkpoints", config.keep_checkpoints)
    try:
        finished = checkpoints.latest_step() == config.iterations
    finally:
        checkpoints.close()
    return results if finished else None


def _run_locked(config, workdir: Path, *, log, on_evaluation=None) -> dict:
    mesh = sharding.config_mesh(config)      # teachers, replay tasks, episodes split over its devices
    step_cfg = sharding.with_mesh(step_config(config), mesh)
    finished = finished_results(config, workdir)
    if finished is not None:
        log(f"[free] {workdir} already holds this run, finished at iteration {config.iterations}: "
            "its results (below, from results.md) are reused, not evaluated again. Delete results.json "
            "to evaluate again, or raise --config.iterations to train on.")
        log((workdir / "results.md").read_text())
        return finished
    if config.self_check:   # accelerators only: the compiled meta-gradient equals the eager one
        check_strategy(config.strategy, config.meta_arch, config.meta_width, log=log)
    # Before the zoo: a query count the val classes cannot supply fails in seconds, not after pre-training.
    val_domains = evaldata.load_eval_domains(config, "val", (config.shot,), config.eval.val_episodes)
    zoo_path = Path(config.zoo_path or workdir / "zoo")
    zoo = distributed.primary_first(lambda: build_or_load_zoo(str(zoo_path), zoo_config(config)), "zoo")
    sharding.validate_device_counts(config, mesh, log)
    zoo.check_compatible(way=config.way, datasets=config.datasets, path=zoo_path)

    # No training image past this point, except the oracle's own (method oracle_maml: not data-free).
    image_shape, mean, std = meta_learner_input(config, zoo.specs)

    make_state = state_constructor(config, zoo, image_shape, mean, std, step_cfg)
    method = methods.method_of(config)
    if not method.trains:            # random init / teacher average: evaluated as they are
        selected = methods.untrained_meta_learner(config, zoo, make_state().meta_learner)
        return _meta_test_and_report(config, workdir, selected, (image_shape, mean, std), -1.0, 0, PhaseTimer(), 0,
                                     log)
    # The oracle replays real meta-train tasks (not data-free); the other methods, the state's bank.
    replay_bank = sharding.replicate(methods.real_task_bank(config), mesh) if method.real_tasks else None
    abstract = sharding.replicated_abstract(jax.eval_shape(make_state), mesh)
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
        state = sharding.replicate(make_state(), mesh)
    start = int(state.step)

    writer = hosts.metrics_writer(workdir, start)
    progress = ProgressLine(config.iterations, start, name=config.method, unit="iterations", rate_unit="it",
                            stream=hosts.progress_stream())
    sample_key = jax.random.fold_in(jax.random.key(config.seed), 7)
    timed = PhaseTimer()
    program = iteration_program(config.iteration, jax.default_backend())

    # Every teacher's weights go to the device(s) once; a draw is the indices of its teachers
    # (zoo.slots): one iteration program for every draw, whatever architectures it mixes.
    stacks = sharding.replicate(tuple(zoo.groups()), mesh)
    for step in range(start, config.iterations):
        warmup = step < config.warmup
        teacher_ids = zoo.sample_ids(jax.random.fold_in(sample_key, step), config.teachers_per_iteration)
        drawn = zoo.slots(teacher_ids, stacks)
        teachers = drawn.replace(group_of=sharding.replicate(drawn.group_of, mesh),
                               local_of=sharding.replicate(drawn.local_of, mesh))
        logged = (step + 1) % config.log_every == 0 or step + 1 == config.iterations
        # Timed (a wait for the device) only at logged iterations and the compiling ones.
        timer = timed if logged or first_of_its_kind(step, start, config.warmup) else None
        state, metrics = run_iteration(state, teachers, step_cfg, warmup, program, timer=timer, bank=replay_bank)
        if logged:
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
            if on_evaluation is not None:
                on_evaluation(done, state.meta_learner)
            progress.newline()
            log(f"[free] iteration {done}: meta-val {config.way}-way {config.shot}-shot {val}")
            if val.mean > best_val:
                best_val, best_step = val.mean, done
                _finite_save(checkpoints.save_best, step, metrics, state.meta_learner.params,
                             {"val_accuracy": val.mean, "step": done}, checkpoints.directory, config.log_every)
                kill_point("after_best_save", done)
        if (config.grid_every and method.recovery == "five" and not warmup
                and (done % config.grid_every == 0 or done == config.iterations)):
            _write_grid(state, teachers, np.concatenate(zoo.grouped_ids(teacher_ids)), step_cfg,
                        workdir / f"recovered_{done:06d}.png")
            kill_point("after_grid", done)
        if done % config.checkpoint_every == 0 or done == config.iterations:
            _finite_save(checkpoints.save, step, metrics, state, {"best_val": best_val, "best_step": best_step,
                                                                 "config": train_metadata(config)},
                         checkpoints.directory, config.log_every)
            kill_point("after_latest_save", done)
        if first_of_its_kind(step, start, config.warmup):
            progress.restart(done)
    progress.newline()
    writer.close()
    distributed.check_replicas_agree(state, "the final training state")

    selected = state.meta_learner
    best = checkpoints.restore_best(abstract.meta_learner.params)
    if best is not None:
        selected = selected.replace_params(best[0])
    checkpoints.close()
    return _meta_test_and_report(config, workdir, selected, (image_shape, mean, std), best_val, best_step, timed,
                                 start, log)


def _meta_test_and_report(config, workdir: Path, selected, learner_input, best_val, best_step, timed, start,
                          log) -> dict:
    """Meta-tests ``selected`` next to the random-init baseline and writes results.md / results.json.
    ``learner_input``: the meta-learner's (image_shape, mean, std)."""
    test_domains = evaldata.load_eval_domains(config, "test", tuple(config.eval.test_shots), config.eval.test_episodes)
    random_init = random_init_meta_learner(config, *learner_input)
    tests = meta_test(selected, random_init, test_domains, config, timed, stream=hosts.progress_stream())
    report = results_lib.build_report(config, tests, best_val, best_step, timed.seconds, start)
    if distributed.is_primary():
        (workdir / "results.md").write_text(report["markdown"])
        (workdir / "results.json").write_text(json.dumps(report["json"], indent=2, allow_nan=False))
    log(report["markdown"])
    return report["json"]


def meta_test(selected, random_init, domains, config, timed=None, stream=None) -> dict:
    """``{shot: {"free": per-domain results, "random_init": ...}}`` on the fixed meta-test episodes,
    with a progress line (episodes done of all settings, rate, ETA, the setting at work) on
    ``stream`` (default stderr). ``timed``: a ``PhaseTimer``, which times FREE's evaluations."""
    shots = tuple(config.eval.test_shots)
    total = 2 * sum(d.episodes[shot].num_episodes for shot in shots for d in domains)
    line = ProgressLine(total, name="meta-test", unit="episodes", rate_unit="episodes", stream=stream)
    done: dict = {}
    tests = {}
    for shot in shots:
        tests[shot] = {}
        for method, learner in (("free", selected), ("random_init", random_init)):
            def report(domain, episodes, _, setting=(shot, method)):
                done[setting + (domain,)] = episodes
                line.update(sum(done.values()), f"{config.way}-way {setting[0]}-shot {domain}: {setting[1]}")

            evaluate = lambda: evaldata.evaluate_domains(learner, domains, shot, config, progress=report)
            timing = timed is not None and method == "free"      # the phase table times FREE's evaluations
            tests[shot][method] = timed("evaluation", evaluate) if timing else evaluate()
    line.update(sum(done.values()), f"done in {line.elapsed():.0f} s")
    line.newline()
    return tests


@jax.jit
def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def _write_grid(state, teachers, teacher_ids, step_cfg, path: Path) -> None:
    """PNG of the current meta-generator adapted to the drawn ``teachers`` (slots; k steps, no
    adversarial term, as in warm-up), one row per (teacher, class) titled ``T<id> c<class>``, a
    teacher drawn twice marked a repeat. ``teacher_ids``: the zoo id of each slot.

    It runs the run's own recovery program (``recover_phase`` with warm-up on, which stores
    nothing) on a copy of the state, which that program consumes: no program of its own to
    compile, and the run's state is unchanged."""
    _, recovered, _ = recover_phase(_copy(state), teachers, step_cfg, True)
    images, labels, confidences, keys, titles = inversion_rows(
        recovered.per_group_images, recovered.per_group_labels, recovered.per_group_confidence,
        np.asarray(relative_targets(step_cfg.inversion)), [teacher_ids])
    if distributed.is_primary():      # every process computes the grid (one program over all devices)
        recovered_grid_png(images, labels, confidences, path, row_titles=titles, row_keys=keys)
