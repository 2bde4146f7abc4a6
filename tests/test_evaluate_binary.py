"""experiments/evaluate.py and its library function, on a saved glyphs:smoke run."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from free_jax import checkpointing
from free_jax.training.evaluate_saved import evaluate_saved

ROOT = Path(__file__).resolve().parents[1]


def glyph_config(arg="smoke"):
    spec = importlib.util.spec_from_file_location("config_glyphs", ROOT / "experiments" / "configs" / "glyphs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="module")
def saved_run(glyph_smoke_run):
    """The session's shared glyphs:smoke run (tests/conftest.py); evaluation only reads it."""
    workdir, results, _ = glyph_smoke_run
    return workdir, results


@pytest.mark.slow
def test_library_function_scores_val_episodes_and_baseline(saved_run):
    workdir, _ = saved_run
    result = evaluate_saved(glyph_config(), workdir, split="val", shots=(1,), episodes=4, which="best",
                            baseline=True)
    assert set(result.free) == {1} and set(result.free[1]) == {"glyphs"}
    for by_domain in (result.free[1], result.random_init[1]):
        accuracy = by_domain["glyphs"]
        assert np.isfinite(accuracy.mean) and 0.0 <= accuracy.mean <= 100.0 and accuracy.ci95 >= 0.0
        assert accuracy.accuracies.shape == (4,)
    table = result.table(way=5)
    assert "5-way 1-shot | glyphs |" in table and "random init" in table and "'val'" in table


@pytest.mark.slow
def test_best_checkpoint_reproduces_the_runs_own_meta_test_numbers(saved_run):
    workdir, results = saved_run
    config = glyph_config()
    result = evaluate_saved(config, workdir, split="test", shots=tuple(config.eval.test_shots),
                            episodes=config.eval.test_episodes, which="best", baseline=True)
    assert result.step == results["best_step"]
    for shot in config.eval.test_shots:
        expected = results["test"][f"{shot}shot/glyphs"]
        assert [result.free[shot]["glyphs"].mean, result.free[shot]["glyphs"].ci95] == pytest.approx(expected["free"])
        assert [result.random_init[shot]["glyphs"].mean, result.random_init[shot]["glyphs"].ci95] == \
            pytest.approx(expected["random_init"])


@pytest.mark.slow
def test_latest_state_and_configuration_mismatch(saved_run):
    workdir, _ = saved_run
    config = glyph_config()
    latest = evaluate_saved(config, workdir, split="val", shots=(1,), episodes=4, which="latest")
    assert latest.step == config.iterations and latest.random_init is None
    assert 0.0 <= latest.free[1]["glyphs"].mean <= 100.0
    config.meta_width = 16
    with pytest.raises(checkpointing.CheckpointError):
        evaluate_saved(config, workdir, split="val", shots=(1,), episodes=4, which="best")
    with pytest.raises(checkpointing.CheckpointError, match="no checkpoints"):
        evaluate_saved(glyph_config(), workdir / "nothing_here", split="val", shots=(1,), episodes=4)
    with pytest.raises(ValueError, match="split"):
        evaluate_saved(glyph_config(), workdir, split="validation", shots=(1,), episodes=4)


@pytest.mark.slow
def test_binary_prints_per_domain_results(saved_run):
    workdir, _ = saved_run
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}   # one device; -O0 inherited
    completed = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "evaluate.py"),
         f"--config={ROOT / 'experiments' / 'configs' / 'glyphs.py'}:smoke", f"--workdir={workdir}",
         "--split=val", "--shots=1", "--episodes=4", "--which=best", "--baseline"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [line for line in completed.stdout.splitlines() if line.startswith("| 5-way 1-shot | glyphs |")]
    assert len(rows) == 1 and rows[0].count("±") == 2, completed.stdout
    assert "split 'val', 4 episodes" in completed.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "evaluate.py"),
                          f"--config={ROOT / 'experiments' / 'configs' / 'glyphs.py'}:smoke",
                          f"--workdir={workdir}", "--split=validation"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode != 0 and "split" in bad.stderr
