"""The device mesh: one axis named ``tasks`` over which teachers and tasks are sharded.

Per-teacher and per-task arrays (a leading teacher/task axis) are split over ``tasks``;
meta-parameters and optimiser states are replicated. The same jitted code runs on one device,
on several local devices and, after ``jax.distributed.initialize()``, on several hosts.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASKS_AXIS = "tasks"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default) named ``tasks``."""
    available = len(jax.devices())
    num_devices = num_devices or available
    if num_devices > available:
        raise ValueError(f"asked for {num_devices} devices but only {available} are visible; on CPU "
                         "set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    # Auto axes: the compiler partitions the jitted step (any per-task strategy works on sharded
    # inputs); Explicit axes (the default of recent jax.make_mesh) reject slicing a sharded axis.
    return jax.make_mesh((num_devices,), (TASKS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:num_devices])


def task_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``tasks``, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(TASKS_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def shard_leading(tree, mesh: Mesh):
    """Places every leaf of ``tree`` with its leading axis split over ``tasks``.

    The leading size must be divisible by the mesh size (pad the task batch if needed).
    """
    size = mesh.shape[TASKS_AXIS]
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.shape[0] % size:
            raise ValueError(f"leading axis {leaf.shape[0]} is not divisible by the {size} devices of "
                             f"the '{TASKS_AXIS}' mesh axis; use a multiple of {size} tasks/teachers")
    return jax.device_put(tree, task_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Places every leaf of ``tree`` whole on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))
