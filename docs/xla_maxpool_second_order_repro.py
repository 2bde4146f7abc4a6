"""Standalone reproduction: XLA miscompiles the second derivative of a reshape + max 2×2 max-pool.

Pure JAX, float64, ~40 lines; run `python docs/xla_maxpool_second_order_repro.py`. Seen with
jax/jaxlib 0.10.2 on XLA:CPU (x86_64, 2026-11-30). Two layers of [3×3 conv, subtract the batch
mean, 2×2 max-pool written as reshape + max], one inner SGD step on a support batch, the loss on
a query batch, the gradient with respect to the initial weights (second order, MAML-style),
vmapped over 2 tasks. Eager (op by op) matches central finite differences; the jitted program is
28 % off (relative L2). With XLA_FLAGS=--xla_disable_hlo_passes=algsimp, or with the pooling written as
max(max(x[0::2, 0::2], x[0::2, 1::2]), max(x[1::2, 0::2], x[1::2, 1::2])), or with
lax.reduce_window, jit is exact (~1e-15). A custom VJP that stores the (x == max) mask is
miscompiled the same way. Without the mean subtraction, or with one layer, the error vanishes.
"""
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def pool(x):  # (B, H, W, C) -> (B, H/2, W/2, C)
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def net(params, x):
    for kernel in params["convs"]:
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = pool(x - x.mean((0, 1, 2)))
    return x.reshape(x.shape[0], -1) @ params["head"]


def cross_entropy(logits, labels):
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(labels.shape[0]), labels])


def task_loss(params, support_x, support_y, query_x, query_y):
    grads = jax.grad(lambda p: cross_entropy(net(p, support_x), support_y))(params)
    adapted = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    return cross_entropy(net(adapted, query_x), query_y)


keys = jax.random.split(jax.random.key(0), 6)
params = {"convs": [0.5 * jax.random.normal(keys[0], (3, 3, 1, 4)), 0.5 * jax.random.normal(keys[1], (3, 3, 4, 4))],
          "head": 0.3 * jax.random.normal(keys[2], (4 * 4 * 4, 3))}
support_x, query_x = jax.random.uniform(keys[3], (2, 3, 16, 16, 1)), jax.random.uniform(keys[4], (2, 6, 16, 16, 1))
support_y, query_y = jnp.tile(jnp.arange(3), (2, 1)), jnp.tile(jnp.repeat(jnp.arange(3), 2), (2, 1))
total = lambda p: jax.vmap(task_loss, (None, 0, 0, 0, 0))(p, support_x, support_y, query_x, query_y).sum()
flat = lambda tree: jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(tree)])
eager, jitted = flat(jax.grad(total)(params)), flat(jax.jit(jax.grad(total))(params))
print(f"jax {jax.__version__}, backend {jax.default_backend()}: "
      f"relative error jit vs eager {float(jnp.linalg.norm(jitted - eager) / jnp.linalg.norm(eager)):.2e}")
direction = jax.tree_util.tree_map(lambda p: jax.random.normal(keys[5], p.shape), params)
shift = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * 1e-7 * d, params, direction)
print(f"directional derivative: finite difference {float((total(shift(1)) - total(shift(-1))) / 2e-7):.6f}, "
      f"eager {float(eager @ flat(direction)):.6f}, jit {float(jitted @ flat(direction)):.6f}")
