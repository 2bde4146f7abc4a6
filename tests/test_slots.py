"""Drawn teachers as slots (free_jax.zoo.slots): one program for every mix of architectures, and
the same numbers as the stacked groups wherever both apply.

A zoo of two groups (Conv4-8 at 16x16x1 and Conv4-4 at 20x20x1: two architectures, two input
sizes) with random weights; tiny shapes so programs compile in seconds.
"""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import models
from free_jax.inversion import InversionConfig, init_generator, invert
from free_jax.inversion.five import _adapt_one, relative_targets
from free_jax.inversion.recovery import recover
from free_jax.meta.alignment import alignment_gradient
from free_jax.meta.replay import ReplayConfig
from free_jax.models.learner import create_meta_learner
from free_jax.training import step as step_lib
from free_jax.training.state import init_state
from free_jax.zoo import TeacherGroup, TeacherSlots, TeacherSpec, Zoo, group_name, map_slots

WAY = 3
# lax_map over slots: one compiled body per group (a loop would compile every group's branch for every slot).
CONFIG = InversionConfig(way=WAY, images_per_class=2, nz=8, ngf=4, k=2, crop_padding=2, strategy="lax_map",
                         pixel_steps=3)


def _group(width, image_shape, size, offset):
    module = models.build_backbone("conv4", WAY, width)
    keys = jax.random.split(jax.random.key(offset), size)
    variables = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves),
                                       *[models.init_variables(module, k, image_shape) for k in keys])
    channels = image_shape[-1]
    specs = [TeacherSpec(id=i, arch="conv4", width=width, dataset=f"d{width}", split="train",
                         class_ids=tuple(offset + WAY * i + j for j in range(WAY)),
                         class_names=tuple(f"c{offset + WAY * i + j}" for j in range(WAY)),
                         image_shape=image_shape, mean=(0.4,) * channels, std=(0.3,) * channels,
                         heldout_accuracy=0.5, best_epoch=1, epochs=1, heldout_history=(0.5,), seed=i, run_index=i,
                         group=group_name("conv4", width, image_shape, WAY), group_index=i) for i in range(size)]
    group = TeacherGroup(variables=variables, class_ids=jnp.asarray([s.class_ids for s in specs], jnp.int32),
                         mean=jnp.full((size, channels), 0.4), std=jnp.full((size, channels), 0.3),
                         module=module, arch="conv4", image_shape=image_shape)
    return group, specs


@pytest.fixture(scope="module")
def zoo():
    return Zoo.from_pretrained([_group(8, (16, 16, 1), 3, 0), _group(4, (20, 20, 1), 2, 100)])


def test_slots_index_the_teachers_select_stacks(zoo):
    ids = [4, 0, 3, 0, 2]                       # group 1, 0, 1, 0, 0 → select: group 0 [0, 0, 2], group 1 [4, 3]
    slots = zoo.slots(ids)
    assert slots.group_of.tolist() == [0, 0, 0, 1, 1] and slots.local_of.tolist() == [0, 0, 2, 1, 0]
    for group, (g, locals_) in zip(zoo.select(ids), [(0, [0, 0, 2]), (1, [1, 0])]):
        chex.assert_trees_all_equal(group.variables, jax.tree_util.tree_map(
            lambda leaf: leaf[np.asarray(locals_)], slots.stacks[g].variables))
    with pytest.raises(ValueError, match="one group"):
        slots.gathered()
    one_group = Zoo.from_pretrained([_group(8, (16, 16, 1), 3, 0)])
    chex.assert_trees_all_equal(one_group.slots([2, 0, 2]).gathered()[0], one_group.select([2, 0, 2])[0])


def test_map_slots_runs_each_slot_on_its_own_groups_branch(zoo):
    stacks = tuple(zoo.groups())
    branch_of = lambda stack: lambda local, scale: scale * stack.class_ids[local].astype(jnp.float32)
    slots = zoo.slots([4, 0, 3])
    for strategy in ("loop", "lax_map", "vmap"):
        out = jax.jit(lambda g, loc, s: map_slots(branch_of, stacks, g, loc, (s,), strategy))(
            slots.group_of, slots.local_of, jnp.asarray([1.0, 2.0, 3.0]))
        expected = [1.0 * np.asarray(zoo.specs[0].class_ids), 2.0 * np.asarray(zoo.specs[4].class_ids),
                    3.0 * np.asarray(zoo.specs[3].class_ids)]
        np.testing.assert_array_equal(out, np.stack(expected))


def test_a_draw_from_one_group_gives_the_same_numbers_as_slots_or_as_a_group(zoo):
    """Slots of several groups key teacher t with ``split(fold_in(key, 0), T)[t]``, as one group of
    T teachers does: a draw from one group recovers the same images either way (pixel inversion
    here; FIVE's slots are checked teacher by teacher below)."""
    ids = [2, 0, 2]                             # all of group 0, in a zoo of two groups
    gen_params, _ = init_generator(jax.random.key(1), CONFIG, (16, 16, 1))
    recovered = jax.jit(lambda teachers: recover("pixel", gen_params, None, teachers, jax.random.key(3), CONFIG,
                                                 False, None, (16, 16, 1))[2])
    as_group, as_slots = recovered(zoo.select(ids)), recovered(zoo.slots(ids))
    np.testing.assert_allclose(as_group.images, as_slots.images, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(as_group.labels, as_slots.labels)
    np.testing.assert_allclose(as_group.metrics["teacher_acc"], as_slots.metrics["teacher_acc"], rtol=1e-6)


def test_a_mixed_draw_adapts_each_slot_to_its_own_teacher_and_aligns_as_the_groups_do(zoo):
    """Slot t of a draw over both groups equals FIVE run on that teacher alone with slot t's codes
    and key; the alignment over the slots equals the alignment over the same draw's groups."""
    gen_params, _ = init_generator(jax.random.key(1), CONFIG, (16, 16, 1))
    key, ids = jax.random.key(3), [4, 1, 3]
    slots = zoo.slots(ids)
    result = jax.jit(lambda teachers: invert(gen_params, teachers, None, key, CONFIG, True))(slots)
    z_key, aug_key = jax.random.split(jax.random.fold_in(key, 0))
    z = jax.random.normal(z_key, (3, CONFIG.batch_size, CONFIG.nz))
    keys = jax.random.split(aug_key, 3)
    targets = relative_targets(CONFIG)
    alone = [jax.jit(lambda v, m, s, codes, k, stack=stack: _adapt_one(
        gen_params, v, m, s, codes, k, targets=targets, module=stack.module, image_shape=stack.image_shape,
        config=CONFIG, meta_learner=None, k=CONFIG.k)) for stack in slots.stacks]     # one program per group
    meta_grads = []
    for t, (g, local) in enumerate(zip(slots.group_of.tolist(), slots.local_of.tolist())):
        variables, class_ids, mean, std = slots.stacks[g].unstacked(local)
        _, images, _, meta_grad, _ = alone[g](variables, mean, std, z[t], keys[t])
        np.testing.assert_allclose(result.per_group_images[0][t], images, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(result.per_group_labels[0][t], np.asarray(class_ids)[np.asarray(targets)])
        meta_grads.append(meta_grad)
    chex.assert_trees_all_close(result.meta_grad, jax.tree_util.tree_map(lambda *g: sum(g), *meta_grads),
                                rtol=1e-4, atol=1e-6)
    # the loop, one slot at a time (slot t waits for slot t − 1, ``vectorize.after``): the same recovery
    one_at_a_time = dataclasses.replace(CONFIG, strategy="loop", teachers_in_flight=1)
    waited = jax.jit(lambda teachers: invert(gen_params, teachers, None, key, one_at_a_time, True))(slots)
    np.testing.assert_allclose(waited.images, result.images, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(waited.meta_grad, result.meta_grad, rtol=1e-4, atol=1e-6)
    # BELL's alignment over the slots visits the same teachers with the same images in the same
    # order as over the stacked groups (group 0: slot 0; group 1: slots 1-2).
    learner = create_meta_learner(jax.random.key(7), "conv4", WAY, (16, 16, 1), [0.5], [0.25], width=4)
    align = jax.jit(lambda teachers, images: alignment_gradient(learner, teachers, images, key))
    images = result.per_group_images[0]
    chex.assert_trees_all_close(align(zoo.select(ids), [images[:1], images[1:]]), align(slots, [images]),
                                rtol=1e-5, atol=1e-6)


def test_one_program_serves_every_mix_of_architectures(zoo):
    """FREE's recovery and alignment phases compile once for draws that mix the groups
    differently (stacked groups compile once per mix). The per-teacher recoveries take the
    same slots through the same switch (``recovery._per_slot``)."""
    shape = (16, 16, 1)
    stacks = tuple(zoo.groups())
    draws = [[0, 1, 2, 3], [3, 4, 0, 1], [3, 4, 4, 3]]                  # 3+1, 2+2, 0+4 teachers
    config = step_lib.StepConfig(inversion=CONFIG, replay=ReplayConfig(
        way=WAY, shot=1, query=1, tasks_per_batch=1, batches=1, inner_steps=1))
    state = init_state(jax.random.key(0), meta_arch="conv4", meta_width=4, way=WAY, image_shape=shape,
                       mean=[0.5], std=[0.3], inversion=CONFIG, outer_lr=1e-3, num_classes_total=120,
                       bank_capacity=40, bank_dtype="uint8")
    step_lib.recover_phase.clear_cache()
    step_lib.align_phase.clear_cache()
    # FIVE's warm-up runs the same program (the adversarial term switched off inside it) and stores nothing.
    state, _, warmup_metrics = step_lib.recover_phase(state, zoo.slots(draws[0], stacks), config, True)
    assert int(state.bank.counts.sum()) == 0 and float(warmup_metrics["inv_adv"]) == 0.0
    for ids in draws:
        teachers = zoo.slots(ids, stacks)
        state, recovered, metrics = step_lib.recover_phase(state, teachers, config, False)
        assert float(metrics["inv_adv"]) != 0.0
        state, metrics = step_lib.align_phase(state, teachers, recovered.per_group_images, config)
        assert np.isfinite(float(metrics["kd_loss"]))
    assert step_lib.recover_phase._cache_size() == 1
    assert step_lib.align_phase._cache_size() == 1
    assert int(state.bank.counts.sum()) == len(draws) * 4 * CONFIG.batch_size


def test_slots_split_over_devices_equal_one_device(zoo):
    """A mixed draw's FIVE over the 4 forced CPU devices (3 slots: one padded) equals one device."""
    from free_jax import sharding
    if jax.device_count() < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/conftest.py sets it)")
    gen_params, _ = init_generator(jax.random.key(1), CONFIG, (16, 16, 1))
    mesh = sharding.make_mesh(4)
    split = dataclasses.replace(CONFIG, mesh=mesh)
    slots = zoo.slots([4, 1, 3])
    one = jax.jit(lambda teachers: invert(gen_params, teachers, None, jax.random.key(3), CONFIG, True))(slots)
    placed = TeacherSlots(sharding.replicate(slots.stacks, mesh), sharding.replicate(slots.group_of, mesh),
                          sharding.replicate(slots.local_of, mesh))
    many = jax.jit(lambda teachers: invert(sharding.replicate(gen_params, mesh), teachers, None, jax.random.key(3),
                                           split, True))(placed)
    np.testing.assert_allclose(one.images, many.images, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(one.meta_grad, many.meta_grad, rtol=1e-4, atol=1e-6)
