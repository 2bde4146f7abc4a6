"""Comparison of methods (docs/algorithm.md §2.4, §5): methods × seeds × shots on one zoo and one set of episodes.

``run_comparison`` builds the zoo once (``<output>/zoo``), draws each shot's meta-val and
meta-test episodes once, runs every row (``comparison.rows``: resumable, a finished row is read
back), and writes comparison.md / .json / .csv and the PNG figures to ``output``.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax

from free_jax.comparison import plots, protocols, report, speed
from free_jax.comparison.rows import Row, check_method, finished_record, load_eval_sets, row_config, run_row
from free_jax.locks import claim
from free_jax.training.config import zoo_config
from free_jax.training.validate import validate_config
from free_jax.zoo import build_or_load_zoo

__all__ = ["Row", "run_comparison"]


def plan(methods, seeds, shots) -> list[Row]:
    """Rows in run order: seed-major, then shot, then method (a stopped comparison has whole seeds)."""
    return [Row(method, int(seed), int(shot)) for seed in seeds for shot in shots for method in methods]


def run_comparison(base, output: str | Path, *, methods=("free", "random"), seeds=(0, 1, 2), shots=(1, 5),
                   lrs=(0.01, 0.03, 0.1, 0.3), steps=(10, 20), cross_domains=(), compat: bool = True,
                   recovery_figure: bool = True, recovery_teachers: int = 3, recovery_draws: int = 2,
                   recovery_fresh_steps: int = 200, report_only: bool = False, log=print) -> dict:
    """Runs the comparison; returns comparison.json's content.

    Args:
      base: the run config every row starts from (method, seed, shot and zoo_path are set per row).
      output: directory of the zoo, the rows and the tables and figures.
      methods, seeds, shots: the rows (a K-shot row is trained at K shots and evaluated at K shots).
      lrs, steps: the tuned protocol's grid (chosen per row on meta-validation).
      cross_domains: datasets whose meta-test the meta-learners are also scored on (both protocols).
      compat: meta-test at every evaluation during training (the compatibility figure).
      recovery_figure: FIVE vs fresh generator recovery curves from the first ``free`` row.
      report_only: train and score nothing: the tables and figures of the rows finished so far
        (a running or stopped comparison's partial table; the rows not finished are listed).
    """
    output = Path(output).absolute()
    output.mkdir(parents=True, exist_ok=True)
    rows = plan(methods, seeds, shots)
    grid = protocols.grid_settings(lrs, steps)
    for row in rows:                 # a bad method or setting fails now, not after hours
        config = row_config(base, row, output / "zoo")
        check_method(config)
        validate_config(config)
    # Several processes may share one comparison (the same command started on several hosts or
    # devices): they pre-train the zoo together (zoo.build._build_shared), and each row is run by
    # whichever process claims it first (rows/<row>.claim); a row another process runs is skipped.
    zoo = build_or_load_zoo(str(output / "zoo"), zoo_config(base), shared=True)
    eval_sets = {int(shot): load_eval_sets(base, int(shot), cross_domains) for shot in shots}
    digests = {f"{shot}shot": sets.digests for shot, sets in eval_sets.items()}
    if report_only:
        found = {row: finished_record(base, row, output, eval_sets[row.shot], grid, compat=compat) for row in rows}
        records, missing = [r for r in found.values() if r is not None], [row.name for row, r in found.items()
                                                                           if r is None]
        if not records:
            raise ValueError(f"--report_only: no row of this comparison has finished in {output / 'rows'} "
                             "(with these settings); run it without --report_only first")
    else:
        records, elsewhere = [], []
        for row in rows:
            with claim(output / "rows" / f"{row.name}.claim") as mine:
                if not mine:
                    log(f"[compare] {row.name}: another process is running it; skipped here")
                    elsewhere.append(row)
                    continue
                records.append(run_row(base, row, output, zoo, eval_sets[row.shot], grid, compat=compat, log=log))
            # Every compiled program stays loaded in jit's in-memory caches; a whole table's worth
            # exhausted XLA:CPU's code memory ("LLVM ERROR: Unable to allocate section memory",
            # after 4 glyph-table rows). Drop them between rows: the next row loads what it shares
            # with this one from the persistent compilation cache.
            jax.clear_caches()
        # Rows other processes ran: in the table if they have finished by now (the last process
        # to finish writes the whole table), listed as not finished otherwise.
        found = {row: finished_record(base, row, output, eval_sets[row.shot], grid, compat=compat) for row in elsewhere}
        records += [record for record in found.values() if record is not None]
        missing = [row.name for row, record in found.items() if record is None]
        order = {row.name: index for index, row in enumerate(rows)}
        records.sort(key=lambda record: order[Row(**record["row"]).name])
    for record in records:           # every row (also reused ones) was scored on today's episodes
        shot = record["row"]["shot"]
        if record["fingerprint"]["episodes"] != digests[f"{shot}shot"]:
            raise RuntimeError(f"row {record['row']} was scored on other episodes than this comparison's")

    summary = report.summarize(records, cross_domains)
    (output / "comparison.md").write_text(report.markdown(summary, base, grid, digests, cross_domains, records,
                                                          missing))
    (output / "comparison.csv").write_text(report.csv_text(summary, cross_domains))
    plots.val_curves(records, output / "val_curves.png")
    recovery = None
    free_rows = [r for r in rows if r.method == "free"]
    if recovery_figure and free_rows and free_rows[0].name not in missing:
        with claim(output / "recovery_speed.claim") as mine:      # measured by one process
            recovery = _recovery(base, free_rows[0], output, zoo, recovery_teachers, recovery_draws,
                                 recovery_fresh_steps, log, measure=mine and not report_only)
    payload = {"summary": summary, "episodes": digests, "grid": [s.as_dict() for s in grid],
               "rows": [{k: v for k, v in r.items() if k != "fingerprint"} for r in records],
               "recovery_speed": recovery, "rows_not_finished": missing}
    (output / "comparison.json").write_text(json.dumps(payload, indent=1, allow_nan=False))
    log((output / "comparison.md").read_text())
    return payload


def _recovery(base, row: Row, output: Path, zoo, teachers: int, draws: int, fresh_steps: int, log,
              measure: bool = True):
    """The recovery-speed figure (cached in recovery_speed.json for the same row and settings;
    ``measure=False``: only from that cache)."""
    path = output / "recovery_speed.json"
    wanted = {"row": row.name, "draws": draws, "fresh_steps": fresh_steps}
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = None
    if cached and {k: cached.get(k) for k in wanted} == wanted and len(cached["teachers"]) == min(
            teachers, len(zoo)):
        data = cached
    elif not measure:
        log("[compare] recovery speed: not measured yet (measured by the process that claims it; "
            "--report_only draws only a cached figure)")
        return None
    else:
        log(f"[compare] recovery speed: FIVE ({row.name}) vs fresh generator on {teachers} zoo teachers")
        data = speed.measure(base, row, output, zoo, teachers=teachers, draws=draws, fresh_steps=fresh_steps)
        if data is None:
            log("[compare] recovery speed: no zoo group has the generator's image shape; figure skipped")
            return None
        path.write_text(json.dumps(data, indent=1))
    plots.recovery_speed(data, output / "recovery_speed.png")
    return data
