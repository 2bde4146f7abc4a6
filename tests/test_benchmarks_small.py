"""The maml, pooling, free and inversion benchmark suites run end to end at tiny shapes (figures not meaningful)."""
import pytest

from free_jax.benchmarks import free, inversion, maml, pooling


@pytest.mark.slow  # several minutes: each phase/arm compiles its own program
def test_maml_suite_small_runs_and_flags_each_strategy():
    body = maml.run(small=True)
    for strategy in ("| loop |", "| lax_map |", "| vmap |", "| scan |"):
        assert strategy in body
    assert "max abs diff vs loop+unroll" in body and "PyTorch" in body


def test_pooling_suite_small_times_each_form_and_finds_free_jax_form_exact():
    body = pooling.run(small=True)
    rows = {line.split("|")[1].strip(): line for line in body.splitlines()
            if line.startswith("| ") and "ms" not in line}
    assert set(pooling.FORMS) <= set(rows)
    assert rows["strided maximum (free_jax)"].rstrip(" |").endswith("exact")


@pytest.mark.slow
def test_free_suite_small_runs_every_phase():
    body = free.run(small=True)
    for phase in ("recovery", "alignment", "replay", "per meta-batch", "one iteration"):
        assert phase in body
    assert "Metrics finite: True" in body


@pytest.mark.slow
def test_inversion_suite_small_compares_meta_and_fresh_per_unseen_teacher():
    body = inversion.run(small=True)
    assert "averaged over 2 draws" in body and "Recovery speed-up" in body
    rows = [line for line in body.splitlines() if line.startswith("| 3 |")]   # the unseen teacher
    assert len(rows) == 1 and rows[0].count("|") == 10
    assert "recovered images/s" in body
