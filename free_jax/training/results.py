"""The final results block of a FREE run (markdown for people, JSON for scripts)."""
from __future__ import annotations

import json
import statistics

from free_jax.evaluation import TRANSDUCTIVE_NOTE
from free_jax.training.methods import method_of


def _intervals_overlap(a, b) -> bool:
    return not (a.mean - a.ci95 > b.mean + b.ci95 or b.mean - b.ci95 > a.mean + a.ci95)


def config_record(config) -> dict:
    """The whole config as JSON data, kept in results.json: a rerun of the same config reuses them."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _method_lines(config) -> list[str]:
    """What the run trained: the method (its source, whether it is data-free), objective, ablations."""
    method = method_of(config)
    inv = config.inversion
    if not method.trains:
        what = ("the meta-learner as initialised, untrained" if method.name == "random" else
                "the mean of the zoo's teachers of the meta-learner's architecture, head re-initialised, untrained")
        return [f"Method: {method.name} — {what}; data-free."]
    if method.real_tasks:
        return [f"Method: {method.name} — **NOT data-free**: MAML ({method.source}) on tasks of the real meta-train "
                "images, with the replay budget of the data-free methods; an upper reference, not a data-free result."]
    recovery = {"five": f"FIVE meta-generator, k = {inv.k} steps per teacher",
                "fresh_generator": f"a fresh generator per teacher, {inv.fresh_steps} steps",
                "pixel": f"pixel inversion per teacher, {inv.pixel_steps} steps"}[method.recovery]
    objective = {"bell": "BELL (alignment + replay)", "replay": "replay only (no alignment)",
                 "align": "alignment only (no replay)"}[config.meta_objective]
    terms = [f"λ_bn = {inv.lambda_bn:g}" if method.recovery != "pixel" else f"pixel λ_bn = {inv.pixel_lambda_bn:g}"]
    if method.recovery == "five":
        terms.insert(0, f"λ_adv = {inv.lambda_adv:g}")
    return [f"Method: {method.name} ({method.label}; {method.source}) — data-free; recovery: {recovery}; "
            f"meta-training: {objective}; {', '.join(terms)}."]


def build_report(config, tests: dict, best_val: float, best_step: int, phase_seconds: dict, start_step: int) -> dict:
    """Markdown + JSON: the method, meta-test accuracy ± 95 % CI per shot and domain, the random-init
    baseline on the same episodes, and the wall time of each phase (first call, which includes
    compilation, reported apart from the median of the rest).

    In results.json the run's own meta-learner is under the key "free" whatever its method (so
    scripts reading FREE runs read every run); "method" and "data_free" say what it is."""
    method = method_of(config)
    column = "FREE (ours)" if method.name == "free" else method.label
    if not method.trains:
        selection = "Not trained: the meta-learner is evaluated as it is (no meta-validation)."
    elif best_step > 0:
        selection = (f"Meta-learner selected on meta-validation ({config.shot}-shot, {config.eval.val_episodes} "
                     f"episodes): iteration {best_step}, {best_val:.2f} %.")
    else:
        selection = "No meta-validation ran (too few iterations after warm-up): the final meta-learner is reported."
    lines = [f"## {method.label} results — {'+'.join(config.datasets)}, {config.way}-way",
             "",
             *_method_lines(config),
             selection,
             f"Meta-test: {config.eval.test_episodes} fixed episodes per setting, {config.eval.query} queries "
             "per class, "
             f"{config.eval.steps} SGD steps at lr {config.eval.lr}; {TRANSDUCTIVE_NOTE}."
             + (f" Replay tasks were {config.shot}-shot." if method.trains else ""),
             "",
             f"| setting | domain | {column} | random init | CIs overlap |",
             "| --- | --- | --- | --- | --- |"]
    objective = None if not method.trains else "replay" if method.real_tasks else config.meta_objective  # as run
    payload = {"method": method.name, "data_free": method.data_free, "meta_objective": objective,
               "best_val": best_val, "best_step": best_step, "test": {}, "phase_seconds": {},
               "config": config_record(config)}
    for shot, by_method in tests.items():
        for domain, free in by_method["free"].items():
            baseline = by_method["random_init"][domain]
            lines.append(f"| {config.way}-way {shot}-shot | {domain} | {free} | {baseline} | "
                         f"{'yes' if _intervals_overlap(free, baseline) else 'no'} |")
            payload["test"][f"{shot}shot/{domain}"] = {
                "free": [free.mean, free.ci95], "random_init": [baseline.mean, baseline.ci95],
                "overlap": _intervals_overlap(free, baseline)}
    lines += ["", "| phase | first call (incl. compile), s | median after, s | calls | total, s |",
              "| --- | --- | --- | --- | --- |"]
    for phase, seconds in phase_seconds.items():
        rest = seconds[1:]
        median = statistics.median(rest) if rest else None  # called once: no median (JSON null, not NaN)
        shown = "—" if median is None else f"{median:.3f}"
        lines.append(f"| {phase} | {seconds[0]:.2f} | {shown} | {len(seconds)} | {sum(seconds):.1f} |")
        payload["phase_seconds"][phase] = {"first": seconds[0], "median_after": median, "calls": len(seconds),
                                           "total": sum(seconds)}
    if start_step:
        lines.append(f"\n(resumed at iteration {start_step}: phase times cover this process only)")
    return {"markdown": "\n".join(lines) + "\n", "json": payload}
