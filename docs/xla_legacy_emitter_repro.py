"""Standalone reproduction: XLA:CPU's legacy fusion emitters at -O0 give a wrong first-order gradient.

Pure JAX, float64, ~30 lines. Seen with jax/jaxlib 0.10.2 on XLA:CPU (x86_64, 2026-12-06). Two
blocks of [3×3 convolution (JAX's own), batch-statistics normalisation, ReLU, 2×2 max-pool written
as the maximum of the four strided sub-grids] and a linear head; the gradient of the mean squared
output. Run it four ways:

    export LEGACY=--xla_cpu_use_fusion_emitters=false
    JAX_DISABLE_MOST_OPTIMIZATIONS=1 XLA_FLAGS=$LEGACY python docs/xla_legacy_emitter_repro.py
    JAX_DISABLE_MOST_OPTIMIZATIONS=1 python docs/xla_legacy_emitter_repro.py
    XLA_FLAGS=$LEGACY python docs/xla_legacy_emitter_repro.py
    python docs/xla_legacy_emitter_repro.py

Only the first (legacy emitters and -O0 together) puts the jitted gradient off: its directional
derivative is 12.7646 where the eager gradient and central differences give 12.5669 (1.3e-2
relative L2 between jit and eager); in the other three, jit agrees with eager to ~1e-16 and both
with central differences to ~1e-9. With one block, without the normalisation or without the
pooling, jit agrees with eager even in the first. free_jax's tests compile at
-O0 (faster to compile, same HLO) with XLA's default emitters, which are exact here; the legacy
emitters were tried for their shorter compiles and rejected (BENCHMARKS.md, "Test suite").
"""
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

images = jax.random.normal(jax.random.key(1), (6, 16, 16, 1), jnp.float64)
keys = jax.random.split(jax.random.key(2), 3)
params = {"kernels": [0.3 * jax.random.normal(keys[0], (3, 3, 1, 8), jnp.float64),
                      0.3 * jax.random.normal(keys[1], (3, 3, 8, 8), jnp.float64)],
          "head": 0.1 * jax.random.normal(keys[2], (4 * 4 * 8, 5), jnp.float64)}


def pool(x):
    return jnp.maximum(jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]), jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]))


def loss(p):
    x = images
    for kernel in p["kernels"]:
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = pool(jax.nn.relu((x - x.mean((0, 1, 2))) / jnp.sqrt(x.var((0, 1, 2)) + 1e-5)))
    return jnp.mean((x.reshape(x.shape[0], -1) @ p["head"]) ** 2)


flat = lambda tree: np.concatenate([np.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)])
eager, jitted = flat(jax.grad(loss)(params)), flat(jax.jit(jax.grad(loss))(params))
direction = jax.tree_util.tree_map(lambda leaf: jax.random.normal(jax.random.key(9), leaf.shape, jnp.float64), params)
eps = 1e-7
shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)
central = (float(loss(shifted(1.0))) - float(loss(shifted(-1.0)))) / (2 * eps)
print(f"jax {jax.__version__}: directional derivative eager {eager @ flat(direction):.9f}, "
      f"jit {jitted @ flat(direction):.9f}, central difference {central:.9f}; "
      f"jit vs eager relative L2 {np.linalg.norm(jitted - eager) / np.linalg.norm(eager):.1e}")
