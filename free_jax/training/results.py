"""The final results block of a FREE run (markdown for people, JSON for scripts)."""
from __future__ import annotations

import json
import statistics

from free_jax.evaluation import TRANSDUCTIVE_NOTE


def _intervals_overlap(a, b) -> bool:
    return not (a.mean - a.ci95 > b.mean + b.ci95 or b.mean - b.ci95 > a.mean + a.ci95)


def config_record(config) -> dict:
    """The whole config as JSON data, kept in results.json: a rerun of the same config reuses them."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def build_report(config, tests: dict, best_val: float, best_step: int, phase_seconds: dict, start_step: int) -> dict:
    """Markdown + JSON: meta-test accuracy ± 95 % CI per shot and domain, the random-init baseline
    on the same episodes, and the wall time of each phase (first call, which includes compilation,
    reported apart from the median of the rest)."""
    lines = [f"## FREE results — {'+'.join(config.datasets)}, {config.way}-way",
             "",
             f"Meta-learner selected on meta-validation ({config.shot}-shot, {config.eval.val_episodes} "
             "episodes): "
             f"iteration {best_step}, {best_val:.2f} %." if best_step > 0 else
             "No meta-validation ran (too few iterations after warm-up): the final meta-learner is reported.",
             f"Meta-test: {config.eval.test_episodes} fixed episodes per setting, {config.eval.query} queries "
             "per class, "
             f"{config.eval.steps} SGD steps at lr {config.eval.lr}; {TRANSDUCTIVE_NOTE}. "
             f"Replay tasks were {config.shot}-shot.",
             "",
             "| setting | domain | FREE (ours) | random init | CIs overlap |",
             "| --- | --- | --- | --- | --- |"]
    payload = {"best_val": best_val, "best_step": best_step, "test": {}, "phase_seconds": {},
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
