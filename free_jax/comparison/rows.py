"""One row of a comparison: a method trained with one seed at one shot, then scored under both protocols.

A row lives in ``<output>/rows/<method>_seed<seed>_<shot>shot/``: the run's workdir (checkpoints,
metrics.jsonl, results.json of ``free_jax.training.loop.run``), ``evaluations.jsonl`` (wall time
and, for the compatibility figure, meta-test accuracy at every evaluation during training) and,
once everything is done, ``row.json``. A row whose ``row.json`` records the same fingerprint (run
config, protocol settings, episode digests) is finished: it is read back, not trained or evaluated
again.

Methods are the training loop's (``free_jax.training.methods``): a trained one is run by
``loop.run`` with ``config.method`` set; an untrained one (``random``, ``average``) is built by that
module from the run's random init. An unknown method is refused before any work.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from free_jax import checkpointing
from free_jax.comparison import protocols
from free_jax.training import loop, methods, results as results_lib
from free_jax.training.evaluate_saved import load_saved_meta_learner
from free_jax.training.run_setup import meta_learner_input, random_init_meta_learner
from free_jax.zoo.store import Zoo


@dataclasses.dataclass(frozen=True)
class Row:
    method: str
    seed: int
    shot: int

    @property
    def name(self) -> str:
        return f"{self.method}_seed{self.seed}_{self.shot}shot"


def row_config(base, row: Row, zoo_path: Path):
    """The run config of ``row``: ``base`` with its method, seed and shot (training = evaluation
    shot: a 5-shot row comes from 5-shot training) and the comparison's shared zoo. Rows run
    phase by phase with every iteration timed: the table's recovery seconds are the recovery phase's."""
    config = base.copy_and_resolve_references()
    config.method, config.seed, config.shot = row.method, row.seed, row.shot
    config.iteration, config.log_every = "phased", 1
    config.eval.test_shots = (row.shot,)
    config.zoo_path = str(zoo_path)
    return config


def check_method(config) -> None:
    """Refuses a method the training loop does not know (ValueError naming the valid ones)."""
    methods.method_of(config)


def trains(config) -> bool:
    """Whether the row's meta-learner is trained (random init and the teacher average are not)."""
    return methods.method_of(config).trains


def untrained_meta_learner(config, zoo: Zoo):
    """The meta-learner of an untrained method (``free_jax.training.methods.untrained_meta_learner``),
    built from the run's random init (``run_setup.random_init_meta_learner``)."""
    image_shape, mean, std = meta_learner_input(config, zoo.specs)
    return methods.untrained_meta_learner(config, zoo, random_init_meta_learner(config, image_shape, mean, std))


@dataclasses.dataclass
class EvalSets:
    """The episodes every row shares, for one shot: meta-val and meta-test of the run's datasets and
    meta-test of each cross domain; ``digests`` names them."""

    shot: int
    val: list
    test: list
    cross: dict        # domain name -> meta-test EvalDomains
    digests: dict


def load_eval_sets(config, shot: int, cross_domains=()) -> EvalSets:
    val = protocols.load_episodes(config, "val", shot, config.eval.val_episodes)
    test = protocols.load_episodes(config, "test", shot, config.eval.test_episodes)
    cross = {name: protocols.load_episodes(config, "test", shot, config.eval.test_episodes, datasets=(name,))
             for name in cross_domains}
    digests = {"val": protocols.episodes_digest(val, shot), "test": protocols.episodes_digest(test, shot),
               **{f"cross/{name}": protocols.episodes_digest(d, shot) for name, d in cross.items()}}
    return EvalSets(shot, val, test, cross, digests)


def fingerprint(config, grid, eval_sets: EvalSets, compat: bool) -> dict:
    return {"config": results_lib.config_record(config), "grid": [s.as_dict() for s in grid],
            "episodes": eval_sets.digests, "compat": compat}


def finished_row(row_dir: Path, expected: dict) -> dict | None:
    """The row's record if ``row.json`` holds one of this same fingerprint, else None."""
    path = row_dir / "row.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("fingerprint") == expected else None


def _metrics_curve(workdir: Path, evaluations: list[dict]) -> list[dict]:
    """Meta-validation points of metrics.jsonl (step = iterations done, accuracy, CI) with the wall
    seconds the evaluation hook recorded at each (None where it recorded none)."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    wall = {e["step"]: e["wall_s"] for e in evaluations}
    points = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if "val_accuracy" in entry:
            step = entry["step"] + 1
            points[step] = {"step": step, "val_accuracy": entry["val_accuracy"], "val_ci95": entry["val_ci95"],
                            "wall_s": wall.get(step)}
    return [points[k] for k in sorted(points)]


def _timing(results: dict, config) -> dict:
    """Recovery seconds per iteration (median after the first, compiling call) and per teacher, and
    the run's total timed seconds (all phases, compilation included), from results.json."""
    phases = results.get("phase_seconds", {})
    recovery = phases.get("recovery", {})
    per_iteration = recovery.get("median_after") or recovery.get("first")
    return {"recovery_per_iteration_s": per_iteration,
            "recovery_per_teacher_s": None if per_iteration is None else per_iteration / config.teachers_per_iteration,
            "total_s": sum(p["total"] for p in phases.values()) if phases else None}


def _result(result) -> dict:
    return {"mean": result.mean, "ci95": result.ci95, "accuracies": np.round(result.accuracies, 4).tolist()}


def _evaluation_hook(row_dir: Path, eval_sets: EvalSets, config, compat: bool):
    """``on_evaluation`` for ``loop.run``: appends to evaluations.jsonl, at each meta-validation, the
    wall seconds since the row's training began (the hook's own time left out; a resumed run goes on
    from the last recorded time) and, with ``compat``, the meta-test accuracy of the evaluated
    meta-learner (paper protocol: the compatibility figure)."""
    path = row_dir / "evaluations.jsonl"
    offset = max((e["wall_s"] for e in _evaluation_points(row_dir, None)), default=0.0)
    clock = {"start": time.perf_counter() - offset}

    def hook(step: int, meta_learner) -> None:
        began = time.perf_counter()
        entry = {"step": step, "wall_s": began - clock["start"]}
        if compat:
            test = protocols.score(meta_learner, eval_sets.test, eval_sets.shot, config,
                                   protocols.paper_setting(config))
            entry.update(test_mean=test.mean, test_ci95=test.ci95)
        with path.open("a") as stream:
            stream.write(json.dumps(entry) + "\n")
        clock["start"] += time.perf_counter() - began
    return hook


def _evaluation_points(row_dir: Path, upto: int | None) -> list[dict]:
    """evaluations.jsonl by step (a resumed run evaluates a step again: the last entry wins)."""
    path, points = row_dir / "evaluations.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                if upto is None or entry["step"] <= upto:
                    points[entry["step"]] = entry
    return [points[k] for k in sorted(points)]


def finished_record(base, row: Row, output: Path, eval_sets: EvalSets, grid, *, compat: bool = True) -> dict | None:
    """The record of ``row`` if it finished earlier with these settings and episodes, else None (nothing runs)."""
    config = row_config(base, row, output / "zoo")
    return finished_row(output / "rows" / row.name, fingerprint(config, grid, eval_sets, compat))


def run_row(base, row: Row, output: Path, zoo: Zoo, eval_sets: EvalSets, grid, *, compat: bool = True,
            log=print) -> dict:
    """Trains (or reuses) ``row`` and scores it under both protocols; returns and writes its record."""
    config = row_config(base, row, output / "zoo")
    check_method(config)
    row_dir = output / "rows" / row.name
    expected = fingerprint(config, grid, eval_sets, compat)
    done = finished_row(row_dir, expected)
    if done is not None:
        log(f"[compare] {row.name}: finished earlier, reused ({row_dir / 'row.json'})")
        return done
    row_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    record = {"row": dataclasses.asdict(row), "fingerprint": expected, "trained": trains(config)}
    if not record["trained"]:
        learner = untrained_meta_learner(config, zoo)
        record.update(best_step=None, curve=[], compat=None,
                      timing={"recovery_per_iteration_s": None, "recovery_per_teacher_s": None, "total_s": 0.0})
    else:
        log(f"[compare] {row.name}: training ({config.method}, seed {row.seed}, {row.shot}-shot) in {row_dir}")
        hook = _evaluation_hook(row_dir, eval_sets, config, compat)
        results = loop.run(config, row_dir, log=lambda *_: None, on_evaluation=hook)
        try:
            learner, step = load_saved_meta_learner(config, row_dir, "best")
        except checkpointing.CheckpointError:     # no meta-validation ran: the final meta-learner
            learner, step = load_saved_meta_learner(config, row_dir, "latest")
        evaluations = _evaluation_points(row_dir, config.iterations)
        record.update(best_step=results.get("best_step"), curve=_metrics_curve(row_dir, evaluations),
                      timing=_timing(results, config),
                      compat=[e for e in evaluations if "test_mean" in e] if compat else None)
    paper = protocols.paper_setting(config)
    log(f"[compare] {row.name}: scoring: tuning on meta-val ({len(grid)} settings), then meta-test under both "
        f"protocols" + (f" and on {', '.join(eval_sets.cross)}" if eval_sets.cross else ""))
    chosen, val_grid = protocols.tune(learner, eval_sets.val, row.shot, config, grid)
    record["paper"] = {"setting": paper.as_dict(),
                       "val": _result(protocols.score(learner, eval_sets.val, row.shot, config, paper)),
                       "test": _result(protocols.score(learner, eval_sets.test, row.shot, config, paper))}
    record["tuned"] = {"setting": chosen.as_dict(), "val_grid": val_grid,
                       "test": _result(protocols.score(learner, eval_sets.test, row.shot, config, chosen))}
    record["cross"] = {name: {"paper": _result(protocols.score(learner, domains, row.shot, config, paper)),
                              "tuned": _result(protocols.score(learner, domains, row.shot, config, chosen))}
                       for name, domains in eval_sets.cross.items()}
    record["row_wall_s"] = time.perf_counter() - began     # this process: training (if any) + scoring
    temporary = row_dir / "row.json.tmp"
    temporary.write_text(json.dumps(record, indent=1, allow_nan=False))
    temporary.replace(row_dir / "row.json")         # atomic: a row.json is always a whole finished row
    log(f"[compare] {row.name}: paper {record['paper']['test']['mean']:.2f} %, tuned "
        f"{record['tuned']['test']['mean']:.2f} % (lr {chosen.lr}, {chosen.steps} steps)")
    return record
