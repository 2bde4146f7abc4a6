"""The maml and free benchmark suites run end to end at tiny shapes (figures not meaningful)."""
import pytest

from free_jax.benchmarks import free, maml


@pytest.mark.slow  # several minutes: each phase/arm compiles its own program
def test_maml_suite_small_runs_and_flags_each_strategy():
    body = maml.run(small=True)
    for strategy in ("| loop |", "| lax_map |", "| vmap |", "| scan |"):
        assert strategy in body
    assert "max abs diff vs loop+unroll" in body and "MEASUREMENTS.md" in body


@pytest.mark.slow
def test_free_suite_small_runs_every_phase():
    body = free.run(small=True)
    for phase in ("recovery", "alignment", "replay", "per meta-batch", "one iteration"):
        assert phase in body
    assert "Metrics finite: True" in body
