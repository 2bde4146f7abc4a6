"""Multi-process runs: ``jax.distributed`` start-up, which process writes, and barriers.

Every process runs the same program on the same global ``tasks`` mesh (``free_jax.sharding``):
each builds its own copy of the replicated inputs (config, zoo, evaluation data) and the
compiled programs exchange only what ``shard_map`` collectives exchange. Files are written by
process 0 alone (logs, metrics, results, PNG grids, the zoo, the glyph cache); the Orbax
training checkpoints are written by all processes together (each its share; Orbax's own
barriers). On CPU the collectives between processes use gloo.

  # two processes on this machine, 2 CPU devices each (any of them may start first):
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python experiments/train_free.py ... \\
      --coordinator_address=localhost:12355 --num_processes=2 --process_id=0   # and =1
"""
from __future__ import annotations

import hashlib
import os

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts ``jax.distributed`` when asked to (all three arguments given) or inside a SLURM or
    Open MPI job (JAX reads them from it); otherwise does nothing. Call before any JAX work.

    Returns:
      Whether this is a multi-process run.
    """
    if coordinator_address is None and num_processes is None and process_id is None:
        if not _cluster_detected():
            return False
        _cpu_collectives()
        jax.distributed.initialize()               # reads the cluster's coordinator, size and rank
        return jax.process_count() > 1
    if None in (coordinator_address, num_processes, process_id):
        raise ValueError("a multi-process run needs --coordinator_address, --num_processes and --process_id "
                         f"together; got {coordinator_address!r}, {num_processes!r}, {process_id!r}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id={process_id} is outside 0 .. num_processes - 1 = {num_processes - 1}")
    _cpu_collectives()
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return num_processes > 1


def _cluster_detected() -> bool:
    """Whether a SLURM or Open MPI job launched this process (JAX then reads the coordinator, size
    and rank itself). Other environments JAX knows (TPU VMs, Kubernetes) are not probed: their
    detection queries servers, which stalls elsewhere; pass the flags there."""
    try:
        from jax._src import clusters  # no public API lists them
        return any(env.is_env_present() for env in clusters.ClusterEnv._cluster_types
                   if env.__name__ in ("SlurmCluster", "OmpiCluster"))
    except (ImportError, AttributeError):          # another jax: only explicit flags start it
        return False


def _cpu_collectives() -> None:
    """CPU devices of different processes talk through gloo (the default has no cross-process collectives)."""
    if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] in ("", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0; always true in a single process)."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = 24 * 3600) -> None:
    """Waits until every process reaches ``barrier(name)`` (no-op in a single process).

    Through the coordination service (what Orbax uses), not a device collective: a collective
    times out in gloo after a minute or so, while the others may wait hours (zoo pre-training)."""
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client jax.distributed.initialize made
    client = jax_distributed.global_state.client
    if client is None:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(f"free_jax:{name}", timeout_in_ms=int(timeout_s * 1000))


def primary_first(fn, name: str):
    """``fn()`` on process 0, then (after a barrier) on the others: the primary builds and writes
    what the others then read (e.g. the zoo)."""
    if jax.process_count() == 1:
        return fn()
    if is_primary():
        result = fn()
        barrier(f"{name}:done")
        return result
    barrier(f"{name}:done")
    return fn()


def local_digest(tree) -> str:
    """SHA-256 over this process's copy of every leaf (its first addressable shard, in leaf order)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        shard = leaf.addressable_shards[0].data if isinstance(leaf, jax.Array) else leaf
        digest.update(np.ascontiguousarray(np.asarray(shard)).tobytes())
    return digest.hexdigest()


def check_replicas_agree(tree, what: str) -> None:
    """Raises if the processes' copies of the replicated ``tree`` differ (e.g. different zoos).

    A replicated array is only a promise that every device holds the same values; a process fed
    different inputs would silently train on others. No-op in a single process."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    digest = np.frombuffer(bytes.fromhex(local_digest(tree)), np.uint8)
    multihost_utils.assert_equal(digest, f"the processes' copies of {what} differ: they were given different "
                                         "inputs (zoo, data, config); give every process the same ones")


def shutdown() -> None:
    """Ends a multi-process run: waits for every process, then closes ``jax.distributed``
    (left to interpreter exit, the shutdown barrier failed and aborted the processes)."""
    if jax.process_count() > 1:
        barrier("shutdown")
        jax.distributed.shutdown()
