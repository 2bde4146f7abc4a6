"""Small shared layers: pooling written for fast, exactly differentiable XLA code."""
import jax.numpy as jnp


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """2×2 max-pool with stride 2 on NHWC input, flooring odd sizes like PyTorch's MaxPool2d.

    Written as the elementwise maximum of the four strided sub-grids,

        y[b, i, j, c] = max(x[b, 2i, 2j, c], x[b, 2i, 2j+1, c], x[b, 2i+1, 2j, c], x[b, 2i+1, 2j+1, c]),

    so its derivatives (of every order) are those of ``jnp.maximum`` and contain no
    compare-with-the-reduced-maximum. Why not the obvious forms (docs/exact_gradients.md):
    ``x.reshape(b, h/2, 2, w/2, 2, c).max(axis=(2, 4))`` gives second-order MAML
    meta-gradients that XLA's algebraic simplifier miscompiles (6-60 % wrong in float64,
    under jit with a Python loop or vmap over tasks; a custom VJP that keeps that reduction
    in its residual is miscompiled the same way), and ``lax.reduce_window`` is exact but
    ~1.5× slower for Conv4 fwd+bwd on XLA:CPU. This form is exact and as fast as the reshape
    on CPU (BENCHMARKS.md, maml suite). Ties (e.g. a window of ReLU zeros) share the
    gradient equally, as ``jnp.maximum`` does.
    """
    _, h, w, _ = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    rows_even = jnp.maximum(x[:, 0::2, 0::2, :], x[:, 0::2, 1::2, :])
    rows_odd = jnp.maximum(x[:, 1::2, 0::2, :], x[:, 1::2, 1::2, :])
    return jnp.maximum(rows_even, rows_odd)
