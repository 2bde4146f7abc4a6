"""The maml, pooling, convloop, free and inversion benchmark suites run end to end at tiny shapes
(figures not meaningful)."""
import pytest

from free_jax.benchmarks import convloop, free, inversion, maml, pooling, zoo


@pytest.mark.slow  # several minutes: each phase/arm compiles its own program
def test_maml_suite_small_runs_and_flags_each_strategy():
    body = maml.run(small=True)
    for strategy in ("| loop |", "| lax_map |", "| vmap |", "| scan |"):
        assert strategy in body
    assert "max abs diff vs loop+unroll" in body and "PyTorch" in body


def test_pooling_suite_small_times_each_form():
    """At tiny shapes the error column is not measured (tests/test_selfcheck.py checks free_jax's
    form exact and the former one caught, with the same jitted-vs-eager float64 comparison)."""
    body = pooling.run(small=True)
    rows = {line.split("|")[1].strip(): line for line in body.splitlines()
            if line.startswith("| ") and "ms" not in line}
    assert set(pooling.FORMS) <= set(rows)
    for row in (rows[name] for name in pooling.FORMS):
        cells = [cell.strip() for cell in row.strip(" |").split("|")]
        assert float(cells[1]) > 0 and float(cells[3]) > 0 and cells[-1] == "not measured (--small)", row


@pytest.mark.slow
def test_free_suite_small_runs_every_phase():
    body = free.run(small=True)
    for phase in ("recovery", "alignment", "replay", "per meta-batch", "one iteration",
                  "evaluation per episode (5-way 1-shot, 10 steps, eval.inner_loop=unroll)",
                  "evaluation per episode (5-way 1-shot, 10 steps, eval.inner_loop=scan)"):
        assert phase in body
    assert "Metrics finite: True" in body


def test_zoo_suite_small_times_a_teacher_epoch_against_pytorch():
    body = zoo.equal_work(small=True)
    [row] = [line for line in body.splitlines() if line.startswith("| vectorised")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "30" and float(cells[2]) > 0 and cells[3] == "2.2" and cells[4].endswith("×")


@pytest.mark.slow
def test_inversion_suite_small_compares_meta_and_fresh_per_unseen_teacher():
    body = inversion.run(small=True)
    assert "averaged over 2 draws" in body and "Recovery speed-up" in body
    rows = [line for line in body.splitlines() if line.startswith("| 3 |")]   # the unseen teacher
    assert len(rows) == 1 and rows[0].count("|") == 10
    assert "recovered images/s" in body


def test_convloop_suite_small_times_both_gradients_both_ways_and_they_agree():
    body = convloop.run(small=True)
    rows = [line.split("|")[1:-1] for line in body.splitlines() if line.startswith("| ") and "gradient |" in line
            and "written as" not in line]
    assert {(row[0].strip(), row[1].strip()) for row in rows} == {
        (gradient, form) for gradient in ("kernel gradient", "input gradient")
        for form in ("JAX's rule", "free_jax.models.conv")}
    for row in rows:
        if row[1].strip() == "free_jax.models.conv":
            assert float(row[5]) < 1e-4
