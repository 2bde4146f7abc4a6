"""The N-way K-shot task: the unit that episode sampling produces and MAML consumes."""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class Task(NamedTuple):
    """One N-way K-shot task (or a stack of them with a leading task axis).

    support_x: (N·K, H, W, C) float in [0, 1]; support_y: (N·K,) int in 0..N−1;
    query_x: (N·Q, H, W, C); query_y: (N·Q,).
    """

    support_x: jnp.ndarray
    support_y: jnp.ndarray
    query_x: jnp.ndarray
    query_y: jnp.ndarray
