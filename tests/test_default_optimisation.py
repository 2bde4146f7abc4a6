"""The exactness checks at XLA:CPU's default optimisation level, the machine code users run.

The suite compiles at LLVM -O0 to save compile time (conftest.py); the checks that every number
rests on (second-order meta-gradients against central differences, in the jitted program and
through the full Conv4 with its pooling) are run again here in a subprocess whose programs are
compiled at the default level.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKS = [
    "tests/test_strategy_parity.py::test_jitted_second_order_meta_gradient_matches_finite_differences_through_full_conv4",
    "tests/test_maml.py::test_second_order_gradient_matches_finite_differences_and_differs_from_first_order",
]


@pytest.mark.slow
def test_exactness_checks_pass_at_the_default_optimisation_level(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTEST_XDIST_WORKER",
                                                              "JAX_DISABLE_MOST_OPTIMIZATIONS")}
    env.update(FREE_JAX_TEST_XLA_OPT="default", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--basetemp", str(tmp_path / "inner"), *CHECKS],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "failed" not in result.stdout
