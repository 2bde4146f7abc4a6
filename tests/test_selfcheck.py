"""The start-up self-check passes on correct code and stops a run whose compiled gradient is wrong."""
import jax
import pytest

import free_jax.models.conv4 as conv4
from free_jax.meta import selfcheck

# The meta-learner width the checks run at: tests/test_strategy_parity.py's, whose eager float64
# meta-gradient is the same computation op for op, so most of the one-op programs the eager
# reference needs are compiled once for both (the session's persistent compilation cache).
WIDTH = 4


def reshape_max_pool(x):
    """The pooling free_jax used before (docs/exact_gradients.md): exact in value, and its second
    derivative is miscompiled by XLA's algebraic simplifier (jaxlib 0.10.2, CPU)."""
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def test_self_check_is_skipped_on_cpu_unless_forced():
    assert selfcheck.check_strategy("vmap", log=lambda *_: None) is None


def test_self_check_passes_with_exact_pooling():
    error = selfcheck.check_strategy("vmap", width=WIDTH, force=True, log=lambda *_: None)
    assert error is not None and error < 1e-9


def test_self_check_stops_a_miscompiled_meta_gradient(monkeypatch):
    monkeypatch.setattr(conv4, "max_pool_2x2", reshape_max_pool)
    jax.clear_caches()      # the model call is a jitted program: trace it again with the patched pooling
    try:
        with pytest.raises(selfcheck.StrategySelfCheckError, match="strategy 'vmap'.*--config.strategy=loop"):
            selfcheck.check_strategy("vmap", width=WIDTH, force=True, log=lambda *_: None)
    finally:
        monkeypatch.undo()
        jax.clear_caches()
