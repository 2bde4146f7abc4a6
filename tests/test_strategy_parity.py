"""Every vectorisation strategy computes the same numbers, eager and jitted, phase by phase.

This is the suite that proves the accelerator code path ("auto" picks vmap there) on a machine
without one: each phase of FREE runs in float64 at tiny shapes under every strategy of
``free_jax.vectorize`` ("loop", "vmap", "lax_map"), jitted, and is compared with the eager
(op-by-op, uncompiled) Python loop, which is itself checked against central finite differences.
Agreement is asserted to 1e-9 relative (float64 rounding is ~1e-15; the pooling bug this suite
was written for put second-order meta-gradients 6-60 % off, docs/exact_gradients.md).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import evaluation, models, vectorize
from free_jax.data.base import SplitData
from free_jax.data.episodes import episode_tasks
from free_jax.inversion import InversionConfig, init_generator, invert_and_meta_update
from free_jax.meta import maml
from free_jax.meta.alignment import alignment_gradient
from free_jax.models.learner import create_meta_learner
from free_jax.zoo.group import TeacherGroup

STRATEGIES = ("loop", "vmap", "lax_map")
RTOL = 1e-9
SHAPE = (16, 16, 1)


def eager(fn, *args):
    """``fn(*args)`` op by op: the library's model calls are jitted programs of their own
    (``free_jax.models.apply``), which ``jax.disable_jit`` runs uncompiled too."""
    with jax.disable_jit():
        return fn(*args)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def to_f64(tree):
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree_util.tree_leaves(tree)])


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    """Relative L2 distance of two pytrees ≤ rtol (per tree, so zero entries cannot hide)."""
    a, e = flat(actual), flat(expected)
    assert a.shape == e.shape, what
    error = np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-300)
    assert error <= rtol, f"{what}: relative L2 error {error:.3e} > {rtol:.0e}"


def meta_learner(width=4, size=16, way=3, key=0):
    return to_f64(create_meta_learner(jax.random.key(key), "conv4", way, (size, size, 1), [0.5], [0.25],
                                      width=width))


def random_tasks(num_tasks=3, way=3, shot=1, query=2, size=16, key=1):
    """Tasks whose classes differ by a per-class pattern, in float64."""
    keys = jax.random.split(jax.random.key(key), 3)
    prototypes = jax.random.uniform(keys[0], (num_tasks, way, 1, size, size, 1), jnp.float64)

    def images(k, per_class):
        noise = 0.2 * jax.random.normal(k, (num_tasks, way, per_class, size, size, 1), jnp.float64)
        return jnp.clip(prototypes + noise, 0, 1).reshape(num_tasks, way * per_class, size, size, 1)

    labels = lambda per_class: jnp.broadcast_to(jnp.repeat(jnp.arange(way), per_class), (num_tasks, way * per_class))
    return maml.Task(images(keys[1], shot), labels(shot), images(keys[2], query), labels(query))


def synthetic_split(num_classes=6, per_class=8, seed=0) -> SplitData:
    """uint8 classes: a fixed random pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (num_classes, *SHAPE))
    labels = np.repeat(np.arange(num_classes), per_class)
    images = np.clip(prototypes[labels] + rng.normal(0, 30, (len(labels), *SHAPE)), 0, 255).astype(np.uint8)
    return SplitData(images, labels.astype(np.int32), tuple(f"class{c}" for c in range(num_classes)),
                     (0.5,), (0.25,), "synthetic", "train")


def teacher_group(num_teachers=2, way=3, width=4):
    module = models.build_backbone("conv4", way, width)
    variables = [models.init_variables(module, k, SHAPE) for k in jax.random.split(jax.random.key(5), num_teachers)]
    return to_f64(TeacherGroup(
        variables=jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *variables),
        class_ids=jnp.arange(num_teachers * way, dtype=jnp.int32).reshape(num_teachers, way),
        mean=jnp.full((num_teachers, 1), 0.4), std=jnp.full((num_teachers, 1), 0.3),
        module=module, arch="conv4", image_shape=SHAPE))


# --------------------------------------------------------------------------- replay (MAML)
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_replay_meta_gradient_equal_under_every_strategy_eager_and_jitted(first_order):
    learner, tasks = meta_learner(), random_tasks(num_tasks=2, shot=2)
    logits_fn = learner.logits_fn()

    def meta_gradient(params, tasks, strategy):
        return maml.meta_gradient(logits_fn, params, tasks, steps=2, lr=0.1, first_order=first_order,
                                  strategy=strategy)

    reference, reference_metrics = eager(meta_gradient, learner.params, tasks, "loop")
    for strategy in STRATEGIES:
        jitted = jax.jit(meta_gradient, static_argnums=2)(learner.params, tasks, strategy)
        assert_close(jitted[0], reference, f"jitted {strategy} meta-gradient")
        assert_close(jitted[1]["loss"], reference_metrics["loss"], f"jitted {strategy} loss")
    # Eager vmap (batched op by op) too, first order only: JAX's batching rules without XLA (eager
    # lax_map is a compiled scan, covered above). The second-order case's vmap is checked jitted, as
    # users run it; its eager form compiled hundreds more one-op programs (BENCHMARKS.md, "Test suite").
    if first_order:
        assert_close(eager(meta_gradient, learner.params, tasks, "vmap")[0], reference, "eager vmap meta-gradient")


@pytest.mark.optimised     # the exactness check every number rests on, in the machine code users run
def test_jitted_second_order_meta_gradient_matches_finite_differences_through_full_conv4():
    """The program users run (jitted, strategy "auto") against central differences, float64,
    the full 4-block Conv4 at 28 px (odd feature maps 7 → 3 exercise the pooling's floor); the
    first-order meta-gradient (FOMAML, ``first_order=True``) misses the same differences.

    The loss is piecewise smooth (ReLU and max-pool kinks) and, through batch-statistics BN on
    few support images, sharply curved: steps of 1e-5 already cross kinks and give slopes 50×
    off, so the difference step is 1e-7 (float64 leaves ~1e-9 relative rounding there)."""
    learner = meta_learner(width=16, size=28, way=5)
    tasks = random_tasks(num_tasks=2, way=5, shot=2, query=2, size=28, key=2)
    logits_fn = learner.logits_fn()
    loss = jax.jit(lambda p: maml.meta_batch_loss(logits_fn, p, tasks, steps=3, lr=0.1)[0])
    gradients = {first_order: jax.jit(lambda p, first_order=first_order: maml.meta_gradient(
        logits_fn, p, tasks, steps=3, lr=0.1, first_order=first_order)[0])(learner.params)
        for first_order in (False, True)}
    leaves, treedef = jax.tree_util.tree_flatten(learner.params)
    for seed in range(3):
        keys = jax.random.split(jax.random.key(10 + seed), len(leaves))
        direction = treedef.unflatten([jax.random.normal(k, leaf.shape, jnp.float64) for k, leaf in zip(keys, leaves)])
        eps = 1e-7
        shifted = lambda s: jax.tree_util.tree_map(lambda p, d: p + s * eps * d, learner.params, direction)
        finite_difference = (float(loss(shifted(1.0))) - float(loss(shifted(-1.0)))) / (2 * eps)
        directional = {order: float(flat(g) @ flat(direction)) for order, g in gradients.items()}
        np.testing.assert_allclose(directional[False], finite_difference, rtol=1e-6)
        assert abs(directional[True] - finite_difference) > 1e-3 * abs(finite_difference), directional


# --------------------------------------------------------------------------- FIVE
@pytest.mark.parametrize("adversarial", [False, True], ids=["warmup", "adversarial"])
def test_five_recovery_and_generator_meta_update_equal_under_every_strategy(adversarial):
    group = teacher_group()
    base = InversionConfig(way=3, images_per_class=2, nz=8, ngf=4, k=2, flip=True, crop_padding=2)
    gen_params, gen_opt_state = to_f64(init_generator(jax.random.key(0), base, SHAPE))
    learner = meta_learner() if adversarial else None
    key = jax.random.key(3)

    def five(gen_params, gen_opt_state, config):
        return invert_and_meta_update(gen_params, gen_opt_state, [group], key, config, warmup=not adversarial,
                                      meta_learner=learner)

    reference = eager(five, gen_params, gen_opt_state, dataclasses.replace(base, strategy="loop"))
    variants = {strategy: dataclasses.replace(base, strategy=strategy) for strategy in STRATEGIES}
    # the loop with one teacher at a time: teacher 2 waits for teacher 1 (``vectorize.after``); a
    # schedule that does not depend on the phase, checked once (a FIVE program costs seconds to compile)
    if not adversarial:
        variants["loop, one teacher in flight"] = dataclasses.replace(base, strategy="loop", teachers_in_flight=1)
    for strategy, config in variants.items():
        new_params, new_opt_state, result = jax.jit(five, static_argnums=2)(gen_params, gen_opt_state, config)
        assert_close(result.images, reference[2].images, f"{strategy}: recovered images")
        assert_close(result.meta_grad, reference[2].meta_grad, f"{strategy}: generator meta-gradient")
        assert_close(new_params, reference[0], f"{strategy}: meta-updated generator")
        assert_close(new_opt_state, reference[1], f"{strategy}: generator Adam state")
        assert_close(result.metrics, reference[2].metrics, f"{strategy}: metrics")


def test_items_in_flight_change_the_schedule_not_the_numbers():
    """``map_leading(..., in_flight=k)``: item i waits for item i − k, so the compiled loop needs
    fewer temporaries (each item's 4 MiB intermediates are reused, not all alive at once), and
    returns the same numbers as the unlimited loop and the eager loop."""
    def item(w, x):
        hidden = jnp.tanh(x[:, None] * w[None, :])                       # (1024, 512) float64: 4 MiB
        return jnp.sum(jnp.cos(hidden) @ hidden.T, axis=1)

    stacked = (jax.random.normal(jax.random.key(0), (4, 512), jnp.float64),
               jax.random.normal(jax.random.key(1), (4, 1024), jnp.float64))
    reference = eager(lambda w, x: vectorize.map_leading(item, w, x, strategy="loop"), *stacked)
    temporaries = {}
    for in_flight in (0, 1, 2):
        compiled = jax.jit(lambda w, x, n=in_flight: vectorize.map_leading(item, w, x, strategy="loop", in_flight=n)
                           ).lower(*stacked).compile()                     # compiled once: run and measured
        assert_close(compiled(*stacked), reference, f"{in_flight} in flight")
        temporaries[in_flight] = compiled.memory_analysis().temp_size_in_bytes
    assert temporaries[1] < temporaries[0], temporaries
    assert temporaries[1] <= temporaries[2] <= temporaries[0], temporaries
    with pytest.raises(ValueError, match="in_flight must be >= 0"):
        vectorize.map_leading(item, *stacked, strategy="loop", in_flight=-1)


# --------------------------------------------------------------------------- BELL alignment
@pytest.mark.parametrize("inner_optimizer", ["adam", "sgd"])
def test_alignment_jitted_equals_eager(inner_optimizer):
    """Alignment is sequential by design (no strategy to vary: the order of teachers matters)."""
    group, learner = teacher_group(num_teachers=3), meta_learner()
    images = jax.random.uniform(jax.random.key(4), (3, 6, *SHAPE), jnp.float64)

    def align(learner, images):
        return alignment_gradient(learner, [group], [images], jax.random.key(6), inner_lr=1e-2,
                                  crop_padding=2, inner_optimizer=inner_optimizer)

    reference, jitted = eager(align, learner, images), jax.jit(align)(learner, images)
    assert_close(jitted[0], reference[0], "alignment gradient")
    assert_close(jitted[1]["kd_loss"], reference[1]["kd_loss"], "distillation loss")


# --------------------------------------------------------------------------- evaluation
def test_evaluation_equal_under_every_strategy():
    """What evaluation computes per episode (first-order adaptation, query loss and accuracy)."""
    learner, split = meta_learner(), synthetic_split()
    episodes = evaluation.make_episodes(split, num_episodes=3, way=3, shot=1, query=2, seed=0)
    tasks = to_f64(episode_tasks(jnp.asarray(split.images[episodes.indices]), 1))
    logits_fn = learner.logits_fn()

    def adapted_query_losses(params, tasks, strategy):
        return vectorize.map_leading(
            lambda task: maml.task_loss(logits_fn, params, task, 3, 0.1, first_order=True)[0], tasks,
            strategy=strategy)

    reference = eager(adapted_query_losses, learner.params, tasks, "loop")
    accuracies = {}
    for strategy in STRATEGIES:
        jitted = jax.jit(adapted_query_losses, static_argnums=2)(learner.params, tasks, strategy)
        assert_close(jitted, reference, f"{strategy}: adapted query losses")
        accuracies[strategy] = evaluation.evaluate(learner, split.images, episodes, steps=3, lr=0.1, chunk_size=2,
                                                   strategy=strategy).accuracies
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(accuracies[strategy], accuracies["loop"])


# --------------------------------------------------------------------------- zoo pre-training
def test_zoo_pretraining_equal_under_every_strategy(monkeypatch):
    """Teachers trained with each strategy (jitted epochs; float64 weights) end identical."""
    from free_jax.zoo import pretrain as pretrain_lib

    original = pretrain_lib._init_program

    def float64_init(module, image_shape):
        init = original(module, image_shape)
        return lambda keys: to_f64(init(keys))

    monkeypatch.setattr(pretrain_lib, "_init_program", float64_init)
    split = synthetic_split()
    results = {strategy: pretrain_lib.pretrain_teachers(
        split, "conv4", 3, 3, 2, jax.random.key(3), strategy=strategy, chunk_size=3, width=4, batch_size=8,
        name="sgd", learning_rate=0.05, momentum=0.9) for strategy in STRATEGIES}
    reference = results["loop"][0].variables
    assert flat(reference).dtype == np.float64 and jax.tree_util.tree_leaves(reference)[0].dtype == jnp.float64
    for strategy in ("vmap", "lax_map"):
        assert_close(results[strategy][0].variables, reference, f"{strategy}: trained teachers")
        assert [s.heldout_history for s in results[strategy][1]] == [s.heldout_history for s in results["loop"][1]]
