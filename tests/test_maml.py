"""MAML core: finite-difference meta-gradients, adaptation, vectorisation and sharding, jitted.

The every-strategy, float64 checks, eager against jitted, live in tests/test_strategy_parity.py."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import sharding
from free_jax.meta import maml
from free_jax.models.learner import create_meta_learner


def tiny_learner(key=0, size=16, channels=1, width=4, way=3):
    return create_meta_learner(jax.random.key(key), "conv4", way, (size, size, channels),
                               mean=[0.5] * channels, std=[0.25] * channels, width=width)


def random_tasks(key, num_tasks, way=3, shot=2, query=3, size=16, channels=1):
    keys = jax.random.split(jax.random.key(key), 4)
    prototypes = jax.random.uniform(keys[0], (num_tasks, way, size, size, channels))
    def images(k, per_class):
        noise = 0.1 * jax.random.normal(k, (num_tasks, way, per_class, size, size, channels))
        return jnp.clip(prototypes[:, :, None] + noise, 0, 1).reshape(num_tasks, way * per_class, size, size, channels)
    labels = lambda per_class: jnp.broadcast_to(jnp.repeat(jnp.arange(way), per_class), (num_tasks, way * per_class))
    return maml.Task(images(keys[1], shot), labels(shot), images(keys[2], query), labels(query))


@pytest.mark.optimised     # the exactness check every number rests on, in the machine code users run
def test_second_order_gradient_matches_finite_differences_and_differs_from_first_order():
    """Jitted, the program users run; tests/test_strategy_parity.py checks that the eager
    meta-gradient equals the jitted one."""
    with jax.enable_x64(True):
        learner = tiny_learner()
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), learner.params)
        learner = learner.replace(variables={**learner.variables, "params": params},
                                  mean=learner.mean.astype(jnp.float64), std=learner.std.astype(jnp.float64))
        task = jax.tree_util.tree_map(lambda a: a[0].astype(a.dtype if a.dtype.kind == "i" else jnp.float64),
                                      random_tasks(0, 1))
        logits_fn = learner.logits_fn()

        @functools.partial(jax.jit, static_argnames="first_order")
        def loss(p, first_order=False):
            return maml.task_loss(logits_fn, p, task, steps=2, lr=0.5, first_order=first_order)[0]

        second = jax.jit(jax.grad(loss))(params)
        first = jax.jit(jax.grad(functools.partial(loss, first_order=True)))(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.key(3), len(leaves))
        direction = treedef.unflatten([jax.random.normal(k, leaf.shape, jnp.float64)
                                       for k, leaf in zip(keys, leaves)])
        eps = 1e-5
        shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, params, direction)
        finite_difference = (loss(shifted(1.0)) - loss(shifted(-1.0))) / (2 * eps)
        dot = lambda g: sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g),
                                                           jax.tree_util.tree_leaves(direction)))
        np.testing.assert_allclose(dot(second), finite_difference, rtol=1e-6)
        assert abs(float(dot(first) - finite_difference)) > 1e-3 * abs(float(finite_difference))


def test_adaptation_lowers_support_loss():
    learner = tiny_learner()
    task = jax.tree_util.tree_map(lambda a: a[0], random_tasks(1, 1))
    logits_fn = learner.logits_fn()
    support_loss = jax.jit(lambda params: maml.cross_entropy(logits_fn(params, task.support_x), task.support_y))
    adapted = jax.jit(lambda params: maml.adapt(logits_fn, params, task.support_x, task.support_y, steps=5,
                                                lr=0.1))(learner.params)
    before, after = support_loss(learner.params), support_loss(adapted)
    assert float(after) < 0.5 * float(before)


def test_scan_inner_loop_equals_unrolled():
    learner = tiny_learner()
    task = jax.tree_util.tree_map(lambda a: a[0], random_tasks(2, 1))
    logits_fn = learner.logits_fn()
    grads = [jax.jit(jax.grad(lambda p: maml.task_loss(logits_fn, p, task, 3, 0.1, inner_loop=loop)[0]))(learner.params)
             for loop in ("unroll", "scan")]
    chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["vmap", "lax_map"])
def test_vectorised_meta_gradient_equals_python_loop(strategy):
    learner = tiny_learner()
    tasks = random_tasks(3, 4)
    logits_fn = learner.logits_fn()
    grads, metrics = jax.jit(lambda p, t: maml.meta_gradient(logits_fn, p, t, 2, 0.1, strategy=strategy))(
        learner.params, tasks)
    task = lambda i: jax.tree_util.tree_map(lambda a: a[i], tasks)
    one_task = jax.jit(jax.grad(lambda p, task: maml.task_loss(logits_fn, p, task, 2, 0.1)[0]))
    per_task = [one_task(learner.params, task(i)) for i in range(4)]
    summed = jax.tree_util.tree_map(lambda *g: sum(g), *per_task)
    chex.assert_trees_all_close(grads, summed, rtol=1e-4, atol=1e-5)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_per_task_gradients_equal_the_gradient_of_the_summed_loss_and_drop_masked_tasks():
    """Σ_t ∇L_t taken task by task (what replay runs; "auto" is ``lax.map`` on CPU) is ∇Σ_t L_t
    (``meta_batch_loss`` under ``jax.grad``), in float64; a masked task's gradient is left out, its
    loss still reported. (tests/test_strategy_parity.py checks every strategy against the eager loop.)"""
    with jax.enable_x64(True):
        learner = tiny_learner()
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), learner.params)
        learner = learner.replace(variables={**learner.variables, "params": params},
                                  mean=learner.mean.astype(jnp.float64), std=learner.std.astype(jnp.float64))
        tasks = jax.tree_util.tree_map(lambda a: a if a.dtype.kind == "i" else a.astype(jnp.float64),
                                       random_tasks(5, 3))
        logits_fn = learner.logits_fn()
        summed = jax.jit(jax.grad(lambda p, t: maml.meta_batch_loss(logits_fn, p, t, 2, 0.1)[0]))
        per_task = jax.jit(lambda p, t, mask: maml.per_task_gradients(logits_fn, p, t, 2, 0.1, mask=mask))
        grads, (losses, _) = per_task(params, tasks, jnp.ones(3, bool))
        chex.assert_trees_all_close(grads, summed(params, tasks), rtol=1e-10, atol=1e-12)
        first_two = jax.tree_util.tree_map(lambda a: a[:2], tasks)
        masked, (masked_losses, _) = per_task(params, tasks, jnp.array([True, True, False]))
        chex.assert_trees_all_close(masked, summed(params, first_two), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(masked_losses, losses)
    assert maml.TASK_GRADIENTS_ON_CPU == "lax_map"
    assert maml.task_strategy("auto") == ("lax_map" if jax.default_backend() == "cpu" else "vmap")
    assert maml.task_strategy("loop") == "loop"


def test_sharded_meta_gradient_equals_single_device():
    if len(jax.devices()) < 4:
        pytest.fail("tests need 4 forced CPU devices: XLA_FLAGS must be set before jax is imported (conftest.py)")
    learner = tiny_learner()
    tasks = random_tasks(4, 4)
    logits_fn = learner.logits_fn()
    vectorised = "loop" if jax.default_backend() == "cpu" else "vmap"
    step = jax.jit(lambda p, t: maml.meta_gradient(logits_fn, p, t, 2, 0.1, strategy=vectorised)[0])
    single = step(learner.params, tasks)
    mesh = sharding.make_mesh(4)
    sharded = step(sharding.replicate(learner.params, mesh), sharding.shard_leading(tasks, mesh))
    chex.assert_trees_all_close(single, sharded, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        sharding.shard_leading(random_tasks(5, 3), mesh)


def _replay_meta_batch(**settings):
    """(lowered program text, (params, opt_state, metrics)) of one jitted replay meta-batch on a tiny bank."""
    import optax

    from free_jax import memory
    from free_jax.meta import replay as replay_lib
    learner = tiny_learner()
    bank = memory.create_bank(6, 4, (16, 16, 1))
    bank = memory.add(bank, jax.random.uniform(jax.random.key(1), (24, 16, 16, 1)), jnp.repeat(jnp.arange(6), 4))
    optimizer = optax.adam(1e-3)
    config = replay_lib.ReplayConfig(way=3, shot=1, query=2, tasks_per_batch=2, batches=1, inner_steps=2,
                                     strategy="loop", **settings)
    program = jax.jit(lambda learner, bank: replay_lib.replay_batch(
        learner, optimizer.init(learner.params), optimizer, bank, jax.random.key(2), 0, config))
    return program.lower(learner, bank).as_text(), program(learner, bank)


def test_replay_is_traced_at_full_matmul_precision_which_changes_nothing_on_cpu(monkeypatch):
    """Replay pins its matmul precision (TF32 on a GPU would swamp the second-order gradient): the
    compiled meta-batch asks for HIGHEST, and on CPU (full float32 either way) the numbers are
    bit-identical to the unpinned program's."""
    from free_jax.meta import replay as replay_lib
    pinned_text, pinned = _replay_meta_batch()
    monkeypatch.setattr(replay_lib, "REPLAY_MATMUL_PRECISION", "default")
    default_text, default = _replay_meta_batch()
    assert "HIGHEST" in pinned_text and "HIGHEST" not in default_text
    chex.assert_trees_all_equal(pinned, default)


def test_replay_inner_loop_setting_scans_the_inner_steps_with_the_same_result():
    """``ReplayConfig.inner_loop`` (``--config.replay.inner_loop``) reaches the meta-batch: "scan"
    puts the inner SGD steps in a loop of the program instead of unrolling them, same numbers up to
    float32 reordering."""
    unrolled_text, unrolled = _replay_meta_batch(inner_loop="unroll")
    scanned_text, scanned = _replay_meta_batch(inner_loop="scan")
    loops = lambda text: text.count("stablehlo.while")          # the sampler's RNG loops are in both
    assert loops(scanned_text) > loops(unrolled_text)
    chex.assert_trees_all_close(scanned, unrolled, rtol=1e-4, atol=1e-6)
