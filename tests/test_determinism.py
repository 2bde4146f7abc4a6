"""free_jax.determinism: the binaries ask XLA for deterministic GPU kernels, which CPU runs accept."""
import os
import subprocess
import sys

from free_jax.determinism import DETERMINISM_FLAG, OPT_OUT_ENV_VAR, request_deterministic_gpu_ops


def test_flag_is_added_once_and_never_overrides_the_users_choice():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert request_deterministic_gpu_ops(environ)
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {DETERMINISM_FLAG}=true"
    assert not request_deterministic_gpu_ops(environ)                       # already there: unchanged
    assert environ["XLA_FLAGS"].count(DETERMINISM_FLAG) == 1
    chosen = {"XLA_FLAGS": f"{DETERMINISM_FLAG}=false"}
    assert not request_deterministic_gpu_ops(chosen) and chosen["XLA_FLAGS"] == f"{DETERMINISM_FLAG}=false"
    empty = {}
    assert request_deterministic_gpu_ops(empty) and empty["XLA_FLAGS"] == f"{DETERMINISM_FLAG}=true"
    opted_out = {OPT_OUT_ENV_VAR: "off"}
    assert not request_deterministic_gpu_ops(opted_out) and "XLA_FLAGS" not in opted_out


def test_a_cpu_backend_starts_with_the_flag():
    """XLA aborts the process on a flag it does not know; this one is known to every backend."""
    environ = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    request_deterministic_gpu_ops(environ)
    completed = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"],
                               env=environ, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "6.0", completed.stderr[-2000:]
