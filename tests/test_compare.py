"""experiments/compare.py and free_jax.comparison: rows, the two protocols, resumability, outputs."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from free_jax import locks
from free_jax.comparison import protocols, report, rows, run_comparison
from free_jax.training import loop

from conftest import load_config_file

ROOT = Path(__file__).resolve().parents[1]
# The smoke comparison, as the in-process call and as the binary's flags (same settings ⇒ same rows).
SMOKE = dict(methods=("free", "random"), seeds=(0, 1), shots=(1,), lrs=(0.01, 0.5), steps=(2,),
             cross_domains=("glyphs_outline",), recovery_teachers=1, recovery_draws=1, recovery_fresh_steps=3)
SMOKE_FLAGS = ["--methods=free,random", "--seeds=0,1", "--shots=1", "--lrs=0.01,0.5", "--steps=2",
               "--cross_domains=glyphs_outline", "--recovery_teachers=1", "--recovery_draws=1",
               "--recovery_fresh_steps=3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smoke_comparison_writes_everything_shares_episodes_and_reuses_finished_rows(tmp_path, monkeypatch):
    output = tmp_path / "compare"
    trained = []
    original_run = loop.run
    monkeypatch.setattr(loop, "run", lambda config, workdir, **kw: trained.append(config.seed) or original_run(
        config, workdir, **kw))
    payload = run_comparison(load_config_file("glyphs", "smoke"), output, log=lambda *_: None, **SMOKE)
    assert trained == [0, 1]                          # free × 2 seeds; random trains nothing

    for name in ("comparison.md", "comparison.json", "comparison.csv"):
        assert (output / name).stat().st_size > 0
    for name in ("val_curves.png", "recovery_speed.png"):
        assert (output / name).read_bytes()[:8] == PNG_MAGIC
    rows = payload["rows"]
    assert [(r["row"]["method"], r["row"]["seed"]) for r in rows] == [("free", 0), ("random", 0), ("free", 1),
                                                                        ("random", 1)]   # seed-major
    # Every row was scored on the same episodes: the digests each row recorded are equal, and so are
    # the episode counts of their per-episode accuracies.
    records = [json.loads((output / "rows" / f"{m}_seed{s}_1shot" / "row.json").read_text())
               for m, s in (("free", 0), ("free", 1), ("random", 0), ("random", 1))]
    digests = {json.dumps(r["fingerprint"]["episodes"], sort_keys=True) for r in records}
    assert len(digests) == 1 and set(json.loads(digests.pop())) == {"val", "test", "cross/glyphs_outline"}
    assert {len(r["paper"]["test"]["accuracies"]) for r in records} == {4}

    for record in records:
        grid = record["tuned"]["val_grid"]
        assert [(g["lr"], g["steps"]) for g in grid] == [(0.01, 2), (0.5, 2)]
        best = max(grid, key=lambda g: g["mean"])       # ties: the first, as protocols.choose
        assert record["tuned"]["setting"] == {"lr": best["lr"], "steps": best["steps"]}
        assert record["paper"]["setting"] == {"lr": 0.01, "steps": 2}
    for record in records[:2]:                          # trained rows: curves, timings, compatibility points
        assert [p["step"] for p in record["curve"]] == [2, 3] and all(p["wall_s"] > 0 for p in record["curve"])
        assert record["timing"]["recovery_per_teacher_s"] > 0
        compat = {p["step"]: p["test_mean"] for p in record["compat"]}
        # the meta-learner selected on meta-val was meta-tested during training too: same number
        assert compat[record["best_step"]] == pytest.approx(record["paper"]["test"]["mean"], abs=1e-4)
    free = next(e for e in payload["summary"] if e["method"] == "free")
    assert free["paper"]["mean"] == pytest.approx(np.mean([r["paper"]["test"]["mean"] for r in records[:2]]))
    markdown = (output / "comparison.md").read_text()
    assert "Compatibility figure (not a result)" in markdown and "glyphs_outline" in markdown
    assert "trained 1-shot" in markdown
    csv_lines = (output / "comparison.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,shot,seeds,paper_mean") and len(csv_lines) == 3

    # The binary, rerun on the same output: every row is reused, nothing trained or rescored.
    mtimes = {p: p.stat().st_mtime_ns for p in output.glob("rows/*/row.json")}
    checkpoint_files = sorted(str(p) for p in output.glob("rows/*/checkpoints/**/*"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}   # one device; -O0 inherited
    completed = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "compare.py"),
         f"--config={ROOT / 'experiments' / 'configs' / 'glyphs.py'}:smoke", f"--output={output}", *SMOKE_FLAGS],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("finished earlier, reused") == 4, completed.stdout
    assert ": training (" not in completed.stdout
    assert {p: p.stat().st_mtime_ns for p in output.glob("rows/*/row.json")} == mtimes
    assert sorted(str(p) for p in output.glob("rows/*/checkpoints/**/*")) == checkpoint_files

    # --report_only on a comparison with an unfinished row: the table of the finished rows, the missing
    # row named, nothing trained or scored.
    (output / "rows" / "free_seed1_1shot" / "row.json").unlink()
    monkeypatch.setattr(loop, "run", lambda *a, **k: pytest.fail("report_only trained a row"))
    monkeypatch.setattr(protocols, "score", lambda *a, **k: pytest.fail("report_only scored a row"))
    partial = run_comparison(load_config_file("glyphs", "smoke"), output, log=lambda *_: None, report_only=True,
                             **SMOKE)
    assert partial["rows_not_finished"] == ["free_seed1_1shot"] and len(partial["rows"]) == 3
    free = next(e for e in partial["summary"] if e["method"] == "free")
    assert free["seeds"] == [0] and free["paper"]["seed_sd"] is None
    markdown = (output / "comparison.md").read_text()
    assert "Partial table" in markdown and "free_seed1_1shot" in markdown and "(one seed)" in markdown

    # Several processes share a comparison: a row another process is running (its claim held)
    # is skipped here, not trained or scored, and listed as not finished.
    logged = []
    with locks.claim(output / "rows" / "free_seed1_1shot.claim") as held:
        assert held
        shared = run_comparison(load_config_file("glyphs", "smoke"), output, log=logged.append, **SMOKE)
    assert shared["rows_not_finished"] == ["free_seed1_1shot"] and len(shared["rows"]) == 3
    assert any("free_seed1_1shot: another process is running it" in line for line in logged)


def test_claims_and_waiting_locks_exclude_other_holders(tmp_path):
    """``claim`` answers False while another holder has the file; ``waiting_lock`` waits for it."""
    path = tmp_path / "x" / "row.claim"
    with locks.claim(path) as first:
        with locks.claim(path) as second:
            assert first and not second
    with locks.claim(path) as again:
        assert again
    holding, release, waited = threading.Event(), threading.Event(), []

    def hold():
        with locks.waiting_lock(path):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    threading.Timer(0.3, release.set).start()
    with locks.waiting_lock(path, on_wait=lambda: waited.append(True)):
        assert release.is_set()                             # acquired only once the holder let go
    assert waited == [True]
    holder.join(5)


def test_tune_chooses_on_validation_only_and_can_pick_a_non_default_lr(monkeypatch):
    """A toy: validation episodes favour lr 0.3, test episodes favour the paper's lr 0.01."""
    val_domains = ["val"]
    seen = []

    def toy_score(meta_learner, domains, shot, config, setting):
        seen.append(domains)
        best = 0.3 if domains is val_domains else 0.01
        mean = 50.0 - abs(np.log(setting.lr / best)) - 0.1 * setting.steps
        return type("Result", (), {"mean": mean, "ci95": 1.0})()

    monkeypatch.setattr(protocols, "score", toy_score)
    grid = protocols.grid_settings((0.01, 0.03, 0.1, 0.3), (10, 20))
    chosen, table = protocols.tune(None, val_domains, 1, None, grid)
    assert chosen == protocols.Setting(0.3, 10)
    assert len(table) == 8 and all(domains is val_domains for domains in seen)
    # ties go to the earlier grid entry; an empty grid is an error
    tie = [(protocols.Setting(0.01, 10), 40.0), (protocols.Setting(0.1, 10), 40.0)]
    assert protocols.choose(tie) == protocols.Setting(0.01, 10)
    with pytest.raises(ValueError, match="empty"):
        protocols.grid_settings((), (10,))


def _record(method, seed, paper, tuned):
    accuracies = lambda mean: [mean - 1.0, mean + 1.0]
    return {"row": {"method": method, "seed": seed, "shot": 1}, "trained": method != "random",
            "paper": {"test": {"mean": paper, "accuracies": accuracies(paper)}, "val": {"mean": paper}},
            "tuned": {"setting": {"lr": 0.1, "steps": 10}, "test": {"mean": tuned, "accuracies": accuracies(tuned)}},
            "cross": {}, "compat": None, "curve": [],
            "timing": {"recovery_per_iteration_s": None, "recovery_per_teacher_s": None, "total_s": 0.0}}


def test_report_states_when_the_protocols_rank_methods_differently():
    records = [_record("free", 0, 30.0, 35.0), _record("free", 1, 32.0, 37.0),
               _record("random", 0, 25.0, 40.0), _record("random", 1, 27.0, 38.0)]
    summary = report.summarize(records)
    free = summary[0]
    assert free["paper"]["mean"] == pytest.approx(31.0) and free["paper"]["seed_sd"] == pytest.approx(np.sqrt(2))
    notes = report.ranking_notes(summary)
    assert len(notes) == 1 and "differs between protocols" in notes[0]
    assert "paper: free > random; tuned: random > free" in notes[0]
    same = report.ranking_notes(report.summarize([_record("free", 0, 30.0, 35.0), _record("random", 0, 25.0, 30.0)]))
    assert same == ["1-shot in-domain: both protocols rank the methods alike (free > random)."]


def test_unknown_method_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="no_such_method"):
        run_comparison(load_config_file("glyphs", "smoke"), tmp_path / "out", methods=("free", "no_such_method"),
                       seeds=(0,), shots=(1,), log=lambda *_: None)
    assert not (tmp_path / "out" / "zoo").exists()


def test_methods_come_from_the_training_loops_registry():
    config = load_config_file("glyphs", "smoke")
    for method, trained in (("fresh_generator", True), ("average", False), ("random", False)):
        config.method = method
        rows.check_method(config)
        assert rows.trains(config) is trained
    config.method = "nonsense"
    with pytest.raises(ValueError, match="nonsense"):
        rows.check_method(config)


def test_evaluation_hook_continues_the_wall_clock_of_a_resumed_row_and_rows_need_the_same_fingerprint(tmp_path):
    (tmp_path / "evaluations.jsonl").write_text(json.dumps({"step": 2, "wall_s": 100.0}) + "\n")
    hook = rows._evaluation_hook(tmp_path, None, None, compat=False)    # no meta-test: nothing else is needed
    hook(3, None)
    points = rows._evaluation_points(tmp_path, None)
    assert [p["step"] for p in points] == [2, 3] and 100.0 <= points[1]["wall_s"] < 110.0
    assert "test_mean" not in points[1]

    (tmp_path / "row.json").write_text(json.dumps({"fingerprint": {"grid": [1]}, "paper": {}}))
    assert rows.finished_row(tmp_path, {"grid": [1]}) is not None
    assert rows.finished_row(tmp_path, {"grid": [2]}) is None            # another grid: scored again
