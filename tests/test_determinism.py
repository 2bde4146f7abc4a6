"""free_jax.determinism: the binaries ask XLA for deterministic GPU kernels, which CPU runs accept."""
import os
import subprocess
import sys

from free_jax import determinism
from free_jax.determinism import DETERMINISM_FLAG, OPT_OUT_ENV_VAR, request_deterministic_gpu_ops


def test_flag_is_added_only_where_a_gpu_can_be_used():
    """No GPU plugin, or JAX_PLATFORMS without a GPU platform: XLA_FLAGS (a compilation-cache key)
    stays as it is."""
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    assert not request_deterministic_gpu_ops(environ) and DETERMINISM_FLAG not in environ["XLA_FLAGS"]
    if not determinism.gpu_plugin_installed():
        assert not request_deterministic_gpu_ops({}), "added on a machine without a GPU plugin"


def test_flag_is_added_once_and_never_overrides_the_users_choice(monkeypatch):
    monkeypatch.setattr(determinism, "gpu_plugin_installed", lambda: True)
    assert request_deterministic_gpu_ops({"JAX_PLATFORMS": "cuda,cpu"})
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


def test_a_cpu_backend_starts_with_the_flag(monkeypatch):
    """XLA aborts the process on a flag it does not know; this one is known to every backend (on a
    machine with a GPU plugin and a CPU fallback the flag is set and the CPU backend must start)."""
    monkeypatch.setattr(determinism, "gpu_plugin_installed", lambda: True)
    environ = {**os.environ, "XLA_FLAGS": ""}
    environ.pop("JAX_PLATFORMS", None)
    assert request_deterministic_gpu_ops(environ)
    environ["JAX_PLATFORMS"] = "cpu"
    completed = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"],
                               env=environ, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "6.0", completed.stderr[-2000:]
