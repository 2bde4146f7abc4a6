"""free_jax: FREE (Faster and Better Data-Free Meta-Learning) in JAX/Flax."""

__version__ = "0.1.0"
