"""The persistent compilation cache the binaries turn on: where it lives, how to turn it off, and
that a second process loads the first one's compiled program instead of compiling it again."""
import os
import subprocess
import sys
import textwrap

from free_jax.compilation_cache import CACHE_ENV_VAR, cache_directory

PROGRAM = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from free_jax.compilation_cache import enable_compilation_cache
    hits = []
    jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name))
    print("cache", enable_compilation_cache(min_compile_seconds=0.0))
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
    print("value", float(f(jnp.arange(64.0).reshape(8, 8) / 64)))
    print("hits", sum(name == "/jax/compilation_cache/cache_hits" for name in hits))
""")


def _run(env):
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_location_precedence_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("FREE_JAX_CACHE_DIR", str(tmp_path / "data"))
    assert cache_directory() == tmp_path / "data" / "xla"
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    assert cache_directory() == tmp_path / "mine"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert cache_directory() == tmp_path / "jax"
    assert cache_directory(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv(CACHE_ENV_VAR, "off")
    assert cache_directory() is None


def test_a_second_process_loads_the_compiled_program_and_computes_the_same(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env[CACHE_ENV_VAR] = str(tmp_path / "xla")
    first, second = _run(env), _run(env)
    assert first["cache"] == second["cache"] == str(tmp_path / "xla")
    assert any((tmp_path / "xla").iterdir())
    assert int(first["hits"]) == 0 and int(second["hits"]) >= 1     # the jitted program, and the array ops before it
    assert first["value"] == second["value"]
    env[CACHE_ENV_VAR] = "off"
    assert _run(env)["cache"] == "None"
