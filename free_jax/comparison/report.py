"""The comparison table: comparison.md (people), comparison.json and comparison.csv (scripts).

Per method and shot, over its seeds: mean meta-test accuracy; the 95 % CI across episodes
(1.96 · std / √E of the per-episode accuracies averaged over seeds: every row scored the same
episodes); the spread across seeds (sample std of the per-seed means); under the paper's and the
tuned protocol, in-domain and on each cross domain; recovery and total wall time; the released
code's selection rule as a labelled compatibility figure.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np

from free_jax.evaluation import TRANSDUCTIVE_NOTE, confidence_interval

PROTOCOLS = ("paper", "tuned")


def _pooled(records, pick) -> dict | None:
    """Mean over seeds, CI across episodes of the seed-averaged accuracies, seed spread."""
    results = [pick(r) for r in records]
    if any(r is None for r in results):
        return None
    per_seed = [r["mean"] for r in results]
    mean, ci95 = confidence_interval(np.mean([r["accuracies"] for r in results], axis=0))
    sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return {"mean": mean, "ci95": ci95, "seed_sd": sd, "per_seed": per_seed}


def _mean_of(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(records: list[dict], cross_domains=()) -> list[dict]:
    """One entry per (method, shot), in the order the methods first appear."""
    groups: dict = {}
    for record in records:
        key = (record["row"]["method"], record["row"]["shot"])
        groups.setdefault(key, []).append(record)
    summary = []
    for (method, shot), rows in groups.items():
        entry = {"method": method, "shot": shot, "seeds": [r["row"]["seed"] for r in rows],
                 "trained": rows[0]["trained"]}
        for protocol in PROTOCOLS:
            entry[protocol] = _pooled(rows, lambda r, p=protocol: r[p]["test"])
            for name in cross_domains:
                entry[f"cross/{name}/{protocol}"] = _pooled(rows, lambda r, p=protocol, n=name: r["cross"][n][p])
        entry["tuned_settings"] = [r["tuned"]["setting"] for r in rows]
        for key in ("recovery_per_iteration_s", "recovery_per_teacher_s", "total_s"):
            entry[key] = _mean_of([r["timing"][key] for r in rows])
        with_compat = [r for r in rows if r.get("compat")]
        entry["compat"] = None
        if with_compat:
            entry["compat"] = {
                "best_test_over_evaluations": _mean_of([max(p["test_mean"] for p in r["compat"]) for r in with_compat]),
                "val_selected_test": _mean_of([r["paper"]["test"]["mean"] for r in with_compat]),
                "evaluations": [len(r["compat"]) for r in with_compat]}
        summary.append(entry)
    return summary


def _cell(stats) -> str:
    if stats is None:
        return "—"
    spread = "one seed" if stats["seed_sd"] is None else f"sd {stats['seed_sd']:.2f}"
    return f"{stats['mean']:.2f} ± {stats['ci95']:.2f} ({spread})"


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def ranking(summary, shot: int, protocol: str, key=None) -> list[str]:
    key = key or protocol
    entries = [e for e in summary if e["shot"] == shot and e[key] is not None]
    return [e["method"] for e in sorted(entries, key=lambda e: -e[key]["mean"])]


def ranking_notes(summary, cross_domains=()) -> list[str]:
    """One sentence per shot (and cross domain): whether the two protocols rank the methods alike."""
    notes = []
    for shot in sorted({e["shot"] for e in summary}):
        for label, suffix in [("in-domain", "")] + [(f"on {n}", f"cross/{n}/") for n in cross_domains]:
            paper = ranking(summary, shot, "paper", f"{suffix}paper")
            tuned = ranking(summary, shot, "tuned", f"{suffix}tuned")
            if len(paper) < 2:
                continue
            if paper == tuned:
                notes.append(f"{shot}-shot {label}: both protocols rank the methods alike ({' > '.join(paper)}).")
            else:
                notes.append(f"**{shot}-shot {label}: the ranking of methods differs between protocols** — paper: "
                             f"{' > '.join(paper)}; tuned: {' > '.join(tuned)}.")
    return notes


def row_lines(records) -> list[str]:
    """Every row under both protocols (per-seed numbers behind the summary)."""
    lines = ["", "### Rows", "", "| method | seed | shot | meta-val-selected iteration | paper protocol | "
             "tuned protocol | tuned (lr, steps) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        step = r.get("best_step")
        lines.append(f"| {r['row']['method']} | {r['row']['seed']} | {r['row']['shot']} | "
                     f"{'—' if not r['trained'] or step is None or step < 0 else step} | "
                     f"{r['paper']['test']['mean']:.2f} ± {r['paper']['test']['ci95']:.2f} | "
                     f"{r['tuned']['test']['mean']:.2f} ± {r['tuned']['test']['ci95']:.2f} | "
                     f"{r['tuned']['setting']['lr']:g}, {r['tuned']['setting']['steps']} |")
    return lines


def markdown(summary, config, grid, digests, cross_domains=(), records=(), missing=()) -> str:
    paper = f"{config.eval.steps} SGD steps at lr {config.eval.lr}"
    grid_text = ", ".join(f"(lr {s.lr:g}, {s.steps})" for s in grid)
    lines = [f"## Comparison of methods — {'+'.join(config.datasets)}, {config.way}-way",
             "",
             f"Every row shares one zoo and one fixed set of episodes per shot: meta-validation "
             f"{config.eval.val_episodes}, meta-test {config.eval.test_episodes} episodes, {config.eval.query} "
             f"queries per class (episode digests {json.dumps(digests)}). "
             "A K-shot row comes from K-shot training (replay tasks and meta-validation at K shots). "
             f"{TRANSDUCTIVE_NOTE}.",
             "Cells: mean meta-test accuracy over seeds ± 95 % CI across episodes (of the per-episode "
             "accuracy averaged over seeds), and in brackets the standard deviation of the per-seed means.",
             f"Paper protocol: {paper}. Tuned protocol: per row, the setting of the best meta-validation "
             f"accuracy in the grid {grid_text}, then frozen for meta-test (meta-test never enters the choice).",
             "The meta-learner itself is selected on meta-validation under the paper protocol.",
             "",
             "| method | setting | seeds | paper protocol | tuned protocol | tuned (lr, steps) per seed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for e in summary:
        chosen = "; ".join(f"{s['lr']:g}, {s['steps']}" for s in e["tuned_settings"])
        lines.append(f"| {e['method']} | {config.way}-way {e['shot']}-shot (trained {e['shot']}-shot) | "
                     f"{len(e['seeds'])} | {_cell(e['paper'])} | {_cell(e['tuned'])} | {chosen} |")
    if missing:
        lines += ["", f"**Partial table:** {len(missing)} row(s) of this comparison have not finished and are not "
                  f"in it: {', '.join(missing)}."]
    lines += [""] + ranking_notes(summary, cross_domains)
    if cross_domains:
        lines += ["", f"### Cross-domain: trained on {'+'.join(config.datasets)}, evaluated on meta-test of "
                  f"{', '.join(cross_domains)}",
                  "The tuned setting is the one chosen on the training domain's meta-validation (no label of the "
                  "target domain is used).", "",
                  "| method | setting | domain | paper protocol | tuned protocol |", "| --- | --- | --- | --- | --- |"]
        for e in summary:
            for name in cross_domains:
                lines.append(f"| {e['method']} | {e['shot']}-shot | {name} | {_cell(e[f'cross/{name}/paper'])} | "
                             f"{_cell(e[f'cross/{name}/tuned'])} |")
    lines += ["", "### Wall time (mean over seeds)",
              "Recovery: median seconds of one iteration's recovery phase after its first (compiling) call, and "
              "that divided by the teachers per iteration. Total: every timed phase of the training run "
              "(recovery, alignment, replay, meta-validation), compilation included.", "",
              "| method | setting | recovery s / iteration | recovery s / teacher | total training s |",
              "| --- | --- | --- | --- | --- |"]
    for e in summary:
        lines.append(f"| {e['method']} | {e['shot']}-shot | {_seconds(e['recovery_per_iteration_s'])} | "
                     f"{_seconds(e['recovery_per_teacher_s'])} | {_seconds(e['total_s'])} |")
    compat = [e for e in summary if e["compat"]]
    if compat:
        lines += ["", "### Compatibility figure (not a result)",
                  "The released code reports the best meta-*test* accuracy over all evaluations during training, "
                  "i.e. it selects on the test set; that number is shown only for comparison with published "
                  "figures. The honest number is the meta-test accuracy of the meta-learner selected on "
                  "meta-validation (paper protocol, mean over seeds).", "",
                  "| method | setting | best meta-test over evaluations (compatibility) | meta-val-selected "
                  "(honest) | evaluations per seed |", "| --- | --- | --- | --- | --- |"]
        for e in compat:
            c = e["compat"]
            lines.append(f"| {e['method']} | {e['shot']}-shot | {c['best_test_over_evaluations']:.2f} | "
                         f"{c['val_selected_test']:.2f} | {', '.join(map(str, c['evaluations']))} |")
    if records:
        lines += row_lines(records)
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("method", "shot", "seeds", "paper_mean", "paper_ci95", "paper_seed_sd", "tuned_mean", "tuned_ci95",
               "tuned_seed_sd", "tuned_settings", "recovery_per_iteration_s", "recovery_per_teacher_s", "total_s",
               "compat_best_test", "compat_val_selected")


def csv_text(summary, cross_domains=()) -> str:
    columns = list(CSV_COLUMNS) + [f"{name}_{protocol}_{part}" for name in cross_domains
                                   for protocol in PROTOCOLS for part in ("mean", "ci95")]
    stream = io.StringIO()
    writer = csv.DictWriter(stream, columns, lineterminator="\n")
    writer.writeheader()
    for e in summary:
        row = {"method": e["method"], "shot": e["shot"], "seeds": " ".join(map(str, e["seeds"])),
               "tuned_settings": " ".join(f"{s['lr']:g}/{s['steps']}" for s in e["tuned_settings"]),
               **{k: e[k] for k in ("recovery_per_iteration_s", "recovery_per_teacher_s", "total_s")}}
        for protocol in PROTOCOLS:
            for part in ("mean", "ci95", "seed_sd"):
                row[f"{protocol}_{part}"] = None if e[protocol] is None else e[protocol][part]
            for name in cross_domains:
                stats = e[f"cross/{name}/{protocol}"]
                for part in ("mean", "ci95"):
                    row[f"{name}_{protocol}_{part}"] = None if stats is None else stats[part]
        if e["compat"]:
            row["compat_best_test"] = e["compat"]["best_test_over_evaluations"]
            row["compat_val_selected"] = e["compat"]["val_selected_test"]
        writer.writerow(row)
    return stream.getvalue()
