"""Test-wide settings: several forced CPU devices (for sharding tests), an isolated cache."""
import os

# Must happen before jax initialises its backends: lets sharding tests use a 4-device mesh.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _shared_glyph_cache(tmp_path_factory):
    """One glyph cache for the whole session (tests that test the cache set their own)."""
    if "FREE_JAX_CACHE_DIR" not in os.environ:
        os.environ["FREE_JAX_CACHE_DIR"] = str(tmp_path_factory.mktemp("free_jax_cache"))
    yield
