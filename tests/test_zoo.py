"""Zoo pre-training (vectorised == alone, best snapshots) and the store (round trip, sampling, errors)."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax.data.base import SplitData
from free_jax.models import apply, init_variables
from free_jax.normalization import normalize, to_unit_float
from free_jax.zoo import TeacherSpec, Zoo, group_name, pretrain as pretrain_lib, pretrain_teachers
from free_jax.zoo.group import TeacherGroup

WAY, WIDTH, BATCH = 3, 4, 8

# Orbax leaves tensorstore coroutines unawaited on some paths; not the behaviour under test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def synthetic_split(num_classes=8, per_class=10, size=16, channels=3, seed=0, name="synthetic"):
    """Learnable classes: a fixed random pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (num_classes, size, size, channels))
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.normal(0, 30, (len(labels), size, size, channels))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return SplitData(images, labels.astype(np.int32), tuple(f"class{c}" for c in range(num_classes)),
                     (0.5,) * channels, (0.25,) * channels, name, "train")


@pytest.fixture(scope="module")
def split():
    return synthetic_split()


SGD = dict(width=WIDTH, batch_size=BATCH, name="sgd", learning_rate=0.05, momentum=0.9)


@pytest.fixture(scope="module")
def trained(split):
    """3 Conv4 teachers, 3 epochs, loop strategy in chunks of 2 (the last one padded).

    SGD, so that strategies compare tightly: Adam's normalisation turns ~1e-9 float noise in the
    gradients of the conv biases (which BatchNorm cancels) into lr-sized steps. The default Adam
    path is exercised by tests/test_zoo_build.py.
    """
    return pretrain_teachers(split, "conv4", 3, WAY, 3, jax.random.key(3), class_offset=100,
                             strategy="loop", chunk_size=2, **SGD)


def test_vectorised_equals_each_teacher_alone(split, trained):
    looped, loop_specs = trained
    key = jax.random.key(3)
    vmapped, vmap_specs = pretrain_teachers(split, "conv4", 3, WAY, 3, key, class_offset=100,
                                            strategy="vmap", **SGD)
    chex.assert_trees_all_close(looped.variables, vmapped.variables, rtol=1e-4, atol=1e-5)
    assert [s.to_dict() for s in loop_specs] == [s.to_dict() for s in vmap_specs]
    # Teacher 2 alone (run index 2) equals teacher 2 of the vectorised runs.
    alone, alone_specs = pretrain_teachers(split, "conv4", 1, WAY, 3, key, class_offset=100,
                                           strategy="loop", first_teacher=2, **SGD)
    chex.assert_trees_all_close(vmapped.teacher(2).variables, alone.variables, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(vmapped.class_ids[2], alone.class_ids[0])
    assert alone_specs[0].heldout_history == vmap_specs[2].heldout_history
    assert alone_specs[0].run_index == 2 and alone_specs[0].seed == vmap_specs[2].seed
    # The teachers differ from each other (their own classes, init and batches).
    assert not np.allclose(vmapped.variables["params"]["Dense_0"]["kernel"][0],
                           vmapped.variables["params"]["Dense_0"]["kernel"][1])


def test_scanned_epoch_trains_the_teachers_the_unrolled_one_does(split, trained):
    """``unroll_steps=False`` (``zoo.epoch_loop="scan"``): an epoch's steps in a ``lax.scan``; the
    fixture's 3-step epochs are unrolled by default on CPU. Same teachers up to float noise."""
    looped, loop_specs = trained
    scanned, scan_specs = pretrain_teachers(split, "conv4", 3, WAY, 3, jax.random.key(3), class_offset=100,
                                            strategy="loop", chunk_size=2, unroll_steps=False, **SGD)
    chex.assert_trees_all_close(looped.variables, scanned.variables, rtol=1e-4, atol=1e-5)
    assert [s.best_epoch for s in loop_specs] == [s.best_epoch for s in scan_specs]


def _heldout_accuracy(split, group, spec, index):
    plans = pretrain_lib._plan_teachers(split.labels, split.num_classes, WAY, np.array([spec.seed]))
    mask = plans.held_mask[0] > 0
    images = normalize(to_unit_float(jnp.asarray(split.images[plans.held_index[0][mask]])), split.mean, split.std)
    variables = group.unstacked(index)[0]
    logits = apply(group.module, variables, images, bn_mode="running")
    return float(jnp.mean(jnp.argmax(logits, -1) == plans.held_labels[0][mask]))


def test_best_epoch_snapshot_and_specs(split, trained):
    group, specs = trained
    chex.assert_shape(group.class_ids, (3, WAY))
    chex.assert_tree_all_finite(group.variables)
    for index, spec in enumerate(specs):
        history = np.array(spec.heldout_history)
        assert spec.epochs == 3 and len(history) == 3
        assert spec.heldout_accuracy == pytest.approx(history.max())
        assert spec.best_epoch == int(np.argmax(history)) + 1  # first best epoch on ties
        # The stored weights are the snapshot of that epoch, not the last epoch's weights.
        assert _heldout_accuracy(split, group, spec, index) == pytest.approx(spec.heldout_accuracy, abs=1e-6)
        assert len(set(spec.class_ids)) == WAY and all(100 <= c < 108 for c in spec.class_ids)
        assert spec.class_names == tuple(f"class{c - 100}" for c in spec.class_ids)
        assert list(group.class_ids[index]) == list(spec.class_ids)
        assert spec.image_shape == (16, 16, 3) and spec.arch == "conv4" and spec.width == WIDTH
    assert len({s.class_ids for s in specs}) > 1
    assert np.median([s.heldout_accuracy for s in specs]) > 1 / WAY  # above chance


def _random_group(arch, image_shape, size, dataset, offset):
    """An untrained group with random weights (no compilation: shapes from eval_shape)."""
    from free_jax.models import build_backbone
    module = build_backbone(arch, WAY, WIDTH)
    abstract = jax.eval_shape(lambda: jax.vmap(lambda k: init_variables(module, k, image_shape))(
        jax.random.split(jax.random.key(0), size)))
    rng = np.random.default_rng(size)
    variables = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)
    channels = image_shape[-1]
    specs = [TeacherSpec(id=i, arch=arch, width=WIDTH, dataset=dataset, split="train",
                         class_ids=tuple(offset + i + j for j in range(WAY)),
                         class_names=tuple(f"{dataset}{offset + i + j}" for j in range(WAY)),
                         image_shape=image_shape, mean=(0.4,) * channels, std=(0.3,) * channels,
                         heldout_accuracy=0.5, best_epoch=1, epochs=1, heldout_history=(0.5,), seed=i,
                         run_index=i, group=group_name(arch, WIDTH, image_shape, WAY), group_index=i)
             for i in range(size)]
    group = TeacherGroup(variables=variables, class_ids=jnp.asarray([s.class_ids for s in specs]),
                         mean=jnp.full((size, channels), 0.4), std=jnp.full((size, channels), 0.3),
                         module=module, arch=arch, image_shape=image_shape)
    return group, specs


@pytest.fixture(scope="module")
def mixed_zoo(trained):
    # MA + MD: Conv4 on synthetic 16x16x3, ResNet-10 on another dataset at 16x16x1.
    return Zoo.from_pretrained([trained, _random_group("resnet10", (16, 16, 1), 2, "other", 500)])


def test_saved_and_restored_zoo_is_identical(tmp_path, mixed_zoo):
    path = mixed_zoo.save(tmp_path / "zoo")
    restored = Zoo.load(path)
    assert restored.specs == mixed_zoo.specs
    assert restored.group_names == mixed_zoo.group_names
    for before, after in zip(mixed_zoo.groups(), restored.groups()):
        chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, before), after)
        assert before.arch == after.arch and before.image_shape == after.image_shape
    # Saving again over it replaces it (atomically) and stays loadable.
    restored.extend(mixed_zoo).save(path)
    assert len(Zoo.load(path)) == 2 * len(mixed_zoo)


def test_sample_groups_by_architecture_and_is_deterministic(mixed_zoo):
    assert len(mixed_zoo) == 5 and [s.id for s in mixed_zoo.specs] == list(range(5))
    assert len(mixed_zoo.group_names) == 2
    ids = mixed_zoo.sample_ids(jax.random.key(1), 12)
    groups = mixed_zoo.sample(jax.random.key(1), 12)
    again = mixed_zoo.sample(jax.random.key(1), 12)
    assert sum(g.size for g in groups) == 12
    for group, group_again in zip(groups, again):
        chex.assert_trees_all_equal(group.variables, group_again.variables)
    drawn = {g.arch: [] for g in groups}
    for teacher_id in ids:
        drawn[mixed_zoo.specs[teacher_id].arch].append(mixed_zoo.specs[teacher_id])
    for group in groups:
        specs = drawn[group.arch]
        assert group.size == len(specs)
        np.testing.assert_array_equal(group.class_ids, [s.class_ids for s in specs])
        full = mixed_zoo.group(specs[0].group)
        for position, spec in enumerate(specs):  # draw order is kept within the group
            chex.assert_trees_all_equal(group.unstacked(position)[0], full.unstacked(spec.group_index)[0])
        chex.assert_shape(jax.tree_util.tree_leaves(group.variables), [(len(specs),) + leaf.shape[1:] for leaf in
                                                                       jax.tree_util.tree_leaves(full.variables)])
    assert len(set(ids.tolist())) < 12  # with replacement: 12 draws from 5 teachers repeat


def test_spec_json_round_trip(trained):
    spec = trained[1][1]
    assert TeacherSpec.from_json(spec.to_json()) == spec
    record = spec.to_dict()
    assert record["class_ids"] == list(spec.class_ids) and record["version"]
    with pytest.raises(ValueError, match="unknown fields"):
        TeacherSpec.from_dict(dict(record, colour="red"))
    with pytest.raises(ValueError, match="misses fields"):
        TeacherSpec.from_dict({k: v for k, v in record.items() if k != "arch"})


def test_mismatch_is_a_clear_error(tmp_path, mixed_zoo):
    mixed_zoo.check_compatible(way=WAY, image_shapes=[(16, 16, 3), (16, 16, 1)], archs=["conv4", "resnet10"])
    with pytest.raises(ValueError, match=r"way \[3\] in the zoo, \[5\] configured"):
        mixed_zoo.check_compatible(way=5)
    with pytest.raises(ValueError, match="image shape"):
        mixed_zoo.check_compatible(image_shapes=[(16, 16, 3)])
    with pytest.raises(ValueError, match="architecture"):
        mixed_zoo.check_compatible(archs=["conv4"])
    with pytest.raises(ValueError, match="dataset"):
        mixed_zoo.check_compatible(datasets=["synthetic", "other", "cub"])
    path = mixed_zoo.save(tmp_path / "zoo")
    with pytest.raises(ValueError, match=f"{path}.*delete this one"):
        Zoo.load(path, way=5)
    with pytest.raises(FileNotFoundError, match="pretrain_zoo.py"):
        Zoo.load(tmp_path / "absent")


class _StopBeforeTraining(Exception):
    pass


def test_resnet_teachers_use_the_released_step_schedule_conv4_keeps_adam(split, monkeypatch):
    """ResNets: SGD lr 0.01, momentum 0.9, wd 5e-4, lr × 0.2 at epochs 30, 50, 80; Conv4: Adam 0.01, clip 50."""
    optimizer = pretrain_lib.default_optimizer("resnet10")
    assert (optimizer.name, optimizer.learning_rate) == ("sgd", 0.01)
    assert (optimizer.momentum, optimizer.weight_decay) == (0.9, 5e-4)
    schedule = optimizer.learning_rate_schedule(steps_per_epoch=3)
    np.testing.assert_allclose([float(schedule(3 * epoch)) for epoch in (0, 30, 50, 80)],
                               [0.01, 0.002, 0.0004, 0.00008], rtol=1e-5)
    assert float(schedule(3 * 30 - 1)) == pytest.approx(0.01)       # the last step of epoch 29
    # The optimiser applies it: plain SGD steps (no momentum/decay/clip) on a constant gradient 1.
    plain = dataclasses.replace(optimizer, momentum=0.0, weight_decay=0.0, grad_clip=0.0)
    tx, params = plain.make(steps_per_epoch=1), jnp.zeros(())
    state, sizes = tx.init(params), []
    for _ in range(81):
        updates, state = tx.update(jnp.ones(()), state, params)
        sizes.append(-float(updates))
    np.testing.assert_allclose([sizes[e] for e in (0, 29, 30, 50, 80)], [0.01, 0.01, 0.002, 0.0004, 0.00008], rtol=1e-5)
    conv4 = pretrain_lib.default_optimizer("conv4")
    assert (conv4.name, conv4.learning_rate, conv4.grad_clip, conv4.lr_milestones) == ("adam", 0.01, 50.0, ())
    # pretrain_teachers compiles its epoch with that optimiser and the epoch's step count (24 images / 8).
    seen = {}

    def spy(module, optimizer, batch_size, steps, *args):
        seen.update(optimizer=optimizer, steps=steps)
        raise _StopBeforeTraining

    monkeypatch.setattr(pretrain_lib, "_epoch_program", spy)
    with pytest.raises(_StopBeforeTraining):
        pretrain_teachers(split, "resnet10", 1, WAY, 1, jax.random.key(0), width=WIDTH, batch_size=BATCH)
    assert seen == {"optimizer": optimizer, "steps": 3}
