"""Test-wide settings: several forced CPU devices (for sharding tests), an isolated cache."""
import os

# Must happen before jax initialises its backends: lets sharding tests use a 4-device mesh.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
