"""MAML core, jitted: adaptation, per-task gradients and masking, replay's settings.

Elsewhere, so that each claim is compiled once: the finite-difference checks of the jitted
second-order meta-gradient (with the first-order one shown to differ) and every vectorisation
strategy against the eager loop in float64 live in tests/test_strategy_parity.py; the sharded
meta-gradient against one device, in float64 inside a whole iteration, in tests/test_mesh.py."""
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


def test_adaptation_lowers_support_loss():
    learner = tiny_learner()
    task = jax.tree_util.tree_map(lambda a: a[0], random_tasks(1, 1))
    logits_fn = learner.logits_fn()
    support_loss = jax.jit(lambda params: maml.cross_entropy(logits_fn(params, task.support_x), task.support_y))
    adapted = jax.jit(lambda params: maml.adapt(logits_fn, params, task.support_x, task.support_y, steps=5,
                                                lr=0.1))(learner.params)
    before, after = support_loss(learner.params), support_loss(adapted)
    assert float(after) < 0.5 * float(before)


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
        summed = jax.jit(jax.grad(lambda p, t: maml.meta_batch_loss(logits_fn, p, t, 2, 0.1)[0]))(params, tasks)
        per_task = jax.jit(lambda p, t, mask: maml.per_task_gradients(logits_fn, p, t, 2, 0.1, mask=mask))
        grads, (losses, _) = per_task(params, tasks, jnp.ones(3, bool))
        chex.assert_trees_all_close(grads, summed, rtol=1e-10, atol=1e-12)
        # The mask is an argument of the one compiled program: tasks 1-2 and task 3 alone add up to
        # all three, and task 3's share is not zero, so the mask really left it out.
        masked, (masked_losses, _) = per_task(params, tasks, jnp.array([True, True, False]))
        last, _ = per_task(params, tasks, jnp.array([False, False, True]))
        chex.assert_trees_all_close(jax.tree_util.tree_map(jnp.add, masked, last), summed, rtol=1e-10, atol=1e-12)
        assert float(sum(jnp.vdot(g, g) for g in jax.tree_util.tree_leaves(last))) > 1e-6 * float(
            sum(jnp.vdot(g, g) for g in jax.tree_util.tree_leaves(summed)))
        np.testing.assert_array_equal(masked_losses, losses)
    assert maml.TASK_GRADIENTS_ON_CPU == "lax_map"
    assert maml.task_strategy("auto") == ("lax_map" if jax.default_backend() == "cpu" else "vmap")
    assert maml.task_strategy("loop") == "loop"


def test_tasks_that_do_not_divide_over_the_devices_are_rejected():
    """``shard_leading`` names the problem (the sharded meta-gradient itself equals one device's in
    float64: tests/test_mesh.py, a whole iteration on 4 devices)."""
    if len(jax.devices()) < 4:
        pytest.fail("tests need 4 forced CPU devices: XLA_FLAGS must be set before jax is imported (conftest.py)")
    with pytest.raises(ValueError, match="divisible"):
        sharding.shard_leading(random_tasks(5, 3), sharding.make_mesh(4))


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
    float32 reordering: the second-order gradients through the scanned steps (Adam's moments hold
    them, rtol 1e-4) equal the unrolled ones."""
    unrolled_text, unrolled = _replay_meta_batch(inner_loop="unroll")
    scanned_text, scanned = _replay_meta_batch(inner_loop="scan")
    loops = lambda text: text.count("stablehlo.while")          # the sampler's RNG loops are in both
    assert loops(scanned_text) > loops(unrolled_text)
    chex.assert_trees_all_close(scanned, unrolled, rtol=1e-4, atol=1e-6)
