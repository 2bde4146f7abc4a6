"""The device mesh: one axis named ``tasks`` over which teachers, replay tasks and episodes are split.

Per-teacher and per-task work (a leading teacher/task axis) is split over ``tasks`` with
``split_over_tasks``: a ``jax.shard_map`` whose body runs the device's share with the usual
per-item strategy (``free_jax.vectorize.map_leading``: vmap on accelerators; on CPU a loop, or a
``lax.map`` for replay's per-task gradients),
then all-gathers the per-item outputs and ``psum``s the summed ones (gradients), so every
result leaves the program replicated. Meta-parameters, optimiser states, the memory bank and
the teachers' weights are replicated. The same jitted code runs on one device, on several local
devices and, after ``free_jax.distributed.initialize``, on several processes/hosts.

Counts that the device count does not divide are padded: the first item is repeated and its
copies are masked out of every sum (their per-item outputs are dropped), so the numbers are
those of the unpadded count, at the cost of the padded items' compute. A run with
``teachers_per_iteration`` or ``tasks_per_batch`` not a multiple of the device count logs a
warning naming the fix (``validate_device_counts``).

With one device (``mesh`` None, or of size 1) ``split_over_tasks`` calls the body directly:
exactly the single-device program.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASKS_AXIS = "tasks"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all by default) named ``tasks``.

    In a multi-process run the devices are the global ones (every process's), and the mesh must
    span them all (``num_devices`` 0/None).
    """
    available = len(jax.devices())
    num_devices = num_devices or available
    if num_devices < 1:
        raise ValueError(f"num_devices={num_devices}: use 0 for all visible devices, or a positive count")
    if num_devices > available:
        raise ValueError(f"asked for {num_devices} devices but only {available} are visible; on CPU "
                         "set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax")
    if jax.process_count() > 1 and num_devices != available:
        raise ValueError(f"num_devices={num_devices} in a {jax.process_count()}-process run: the mesh must span "
                         f"all {available} global devices; set num_devices=0")
    # Auto axes: the compiler partitions what is not inside shard_map; Explicit axes (the default
    # of recent jax.make_mesh) reject slicing a sharded axis.
    return jax.make_mesh((num_devices,), (TASKS_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:num_devices])


def mesh_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.shape[TASKS_AXIS])


def config_mesh(config) -> Mesh | None:
    """The run's mesh from ``config.num_devices`` (0 = all visible devices), None for one device.

    None keeps the single-device programs unchanged (the step configs then carry no mesh)."""
    mesh = make_mesh(int(config.get("num_devices", 0)) or None)
    return mesh if mesh_size(mesh) > 1 else None


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
    size = mesh_size(mesh)
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.shape[0] % size:
            raise ValueError(f"leading axis {leaf.shape[0]} is not divisible by the {size} devices of "
                             f"the '{TASKS_AXIS}' mesh axis; use a multiple of {size} tasks/teachers")
    return jax.device_put(tree, task_sharding(mesh))


def replicate(tree, mesh: Mesh | None):
    """Places every leaf of ``tree`` whole on every device of ``mesh`` (None: on the default device).

    In a multi-process run each process supplies its own copy (which must be the same
    everywhere: the zoo, the restored state) and gets a global array; no data crosses processes.
    Without a mesh the leaves are committed to the default device, as arrays restored from a
    checkpoint are: jit keys its programs (and the persistent compilation cache its entries) on
    that placement, so a fresh run and a resumed one, or a run that pre-trained its zoo and one
    that loaded it, call the same compiled programs.
    """
    if mesh is None:
        return jax.device_put(tree, jax.devices()[0])
    target = replicated(mesh)

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == target:
            return leaf
        if jax.process_count() == 1:
            return jax.device_put(leaf, target)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


def with_mesh(step_config, mesh: Mesh | None):
    """``step_config`` (a ``training.step.StepConfig``) with ``mesh`` in its inversion and replay configs."""
    return dataclasses.replace(step_config, inversion=dataclasses.replace(step_config.inversion, mesh=mesh),
                               replay=dataclasses.replace(step_config.replay, mesh=mesh))


# --------------------------------------------------------------------------- splitting work
def masked_sum(stacked, mask):
    """Σ_i over the leading axis of every leaf, items with ``mask[i]`` False left out (None: all)."""
    if mask is None:
        return jax.tree_util.tree_map(lambda leaf: jnp.sum(leaf, axis=0), stacked)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.sum(jnp.where(mask.reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf, 0), axis=0), stacked)


def _pad_leading(leaf, pad: int):
    """``leaf`` with ``pad`` copies of its item 0 appended (an index gather: works for PRNG key arrays too)."""
    return leaf[np.concatenate([np.arange(leaf.shape[0]), np.zeros(pad, np.int32)])] if pad else leaf


def split_over_tasks(body: Callable, stacked, mesh: Mesh | None, shared=()):
    """Runs ``body`` with the leading axis of ``stacked`` split over the ``tasks`` devices.

    ``body(local_stacked, mask, shared) -> (per_item, summed)``: ``local_stacked`` is this
    device's share of every leaf (n_local, ...), ``mask`` (n_local,) bool marks real items (False:
    padding), or is None when nothing is split (then ``body`` must compute the plain
    single-device result); ``shared`` is every device's whole copy of ``shared``. ``per_item``
    leaves have the leading local axis; ``summed`` leaves are this device's sums over its
    (masked) items. Call inside ``jax.jit``.

    Arrays the body needs besides its share go through ``shared``, not a closure: a closed-over
    array of the enclosing program carries that program's (non-manual) sharding, which array
    constructors inside the body (``zeros_like`` in an optimiser's init) reject.

    Returns:
      (per_item, summed): per-item outputs of all n items in order (n, ...), and the sums over
      all devices (``psum``), both replicated on every device.
    """
    size = mesh_size(mesh)
    if size == 1:
        return body(stacked, None, shared)
    count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    padded_count = math.ceil(count / size) * size
    padded = jax.tree_util.tree_map(lambda leaf: _pad_leading(leaf, padded_count - count), stacked)
    mask = jnp.arange(padded_count) < count
    spec = PartitionSpec(TASKS_AXIS)

    def local(local_stacked, local_mask, shared):
        per_item, summed = body(local_stacked, local_mask, shared)
        per_item = jax.tree_util.tree_map(lambda leaf: jax.lax.all_gather(leaf, TASKS_AXIS, tiled=True), per_item)
        return per_item, jax.lax.psum(summed, TASKS_AXIS)

    # check_vma=False: all_gather's result is the same on every device, which out_specs P() states.
    per_item, summed = jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, PartitionSpec()),
                                     out_specs=PartitionSpec(), check_vma=False)(padded, mask, shared)
    return jax.tree_util.tree_map(lambda leaf: leaf[:count], per_item), summed


def validate_device_counts(config, mesh: Mesh | None, log=logging.warning) -> None:
    """Warns when the per-iteration teacher or replay-task count is not a multiple of the devices."""
    size = mesh_size(mesh)
    for name, count in (("teachers_per_iteration", config.teachers_per_iteration),
                        ("replay.tasks_per_batch", config.replay.tasks_per_batch)):
        if count % size:
            padded = math.ceil(count / size) * size
            log(f"[free] {name}={count} is not a multiple of the {size} devices: it is padded to {padded} "
                f"(masked copies, {padded - count} wasted slots). Use a multiple of {size}, "
                "--config.scale_with_devices=True, or --config.num_devices to use fewer devices")


def scale_with_devices(config, mesh: Mesh | None):
    """Weak scaling: a copy of ``config`` with ``teachers_per_iteration`` and ``replay.tasks_per_batch``
    multiplied by the device count when ``config.scale_with_devices`` (else ``config`` itself)."""
    if not config.get("scale_with_devices", False) or mesh_size(mesh) == 1:
        return config
    scaled = config.copy_and_resolve_references()
    scaled.teachers_per_iteration = config.teachers_per_iteration * mesh_size(mesh)
    scaled.replay.tasks_per_batch = config.replay.tasks_per_batch * mesh_size(mesh)
    return scaled


def replicated_abstract(abstract, mesh: Mesh | None):
    """``jax.eval_shape`` output with every leaf marked replicated over ``mesh`` (the restore
    target of a checkpoint; None: unchanged)."""
    if mesh is None:
        return abstract
    target = replicated(mesh)
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=target),
                                  abstract)
