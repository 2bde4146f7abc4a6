"""The one module that talks to Orbax: save and restore pytrees with JSON metadata.

Every checkpoint free_jax writes is an Orbax directory holding two items, written through a
``CompositeCheckpointHandler`` with the ``args=`` API:

* ``tree``: a pytree of arrays (``ocp.args.StandardSave`` / ``StandardRestore``);
* ``metadata``: a JSON-serialisable dict (``ocp.args.JsonSave`` / ``JsonRestore``).

Restoring always goes onto an *abstract target* (``jax.eval_shape`` output or a pytree of
``jax.ShapeDtypeStruct``), so the caller states the structure, shapes and dtypes it expects and
a checkpoint that does not match is an error, never a silent reshape. Orbax writes atomically
(a temporary directory renamed on success), so an interrupted save never leaves a directory
that looks complete.

Every checkpoint also holds a ``checksums`` item: the SHA-256 of each leaf's bytes, in leaf
order, written at save and compared at restore, so a flipped or truncated data file is an error
(or, for training states, a fallback to the previous step), never silently changed values.
Checkpoints written before checksums existed restore without the check.

Errors are ``CheckpointError`` (a ``ValueError``) naming the path and the fix.

Intended to grow a training ``CheckpointManager`` wrapper next to these helpers; keep all Orbax
imports in this file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

_TREE = "tree"
_METADATA = "metadata"
_CHECKSUMS = "checksums"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the expected structure."""


class NonFiniteStateError(CheckpointError):
    """A tree holding NaN/inf was not saved (the previous checkpoints are kept)."""


def leaf_checksums(tree: Any) -> dict[str, str]:
    """{leaf path: SHA-256 hex digest of the leaf's bytes}, in leaf order."""
    return {jax.tree_util.keystr(path): hashlib.sha256(np.ascontiguousarray(np.asarray(leaf)).tobytes()).hexdigest()
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _verify_checksums(restored: Any, expected: dict | None, path: Path) -> None:
    """Raises CheckpointError naming the first leaf whose bytes differ from those saved."""
    if expected is None:  # written before checksums existed
        return
    actual = leaf_checksums(restored)
    if len(actual) != len(expected):
        raise CheckpointError(f"checkpoint {path} is corrupt: {len(actual)} arrays restored, {len(expected)} "
                              "were saved. Delete it and write it again")
    for (name, digest), saved in zip(actual.items(), expected.values()):
        if digest != saved:
            raise CheckpointError(f"checkpoint {path} is corrupt: array {name} does not match the checksum "
                                  "written at save (damaged or truncated data file). Delete it and write it again")


@jax.jit
def _finite_flags(leaves):
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


def non_finite_leaves(tree: Any) -> list[str]:
    """Paths of the floating-point leaves of ``tree`` holding NaN or inf (one reduction on device)."""
    named = [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
             if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    if not named:
        return []
    flags = np.asarray(_finite_flags([leaf for _, leaf in named]))
    return [name for (name, _), finite in zip(named, flags) if not finite]


def _is_disk_full(error: BaseException) -> bool:
    text = str(error)
    return (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        "RESOURCE_EXHAUSTED" in text or "No space left" in text


class _DropDiskFullRecords(logging.Filter):
    """Drops Orbax's own log records of a full disk (a traceback of ~100 lines per writer thread):
    the ``CheckpointError`` raised after them says it in a few lines. Other records pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_disk_full(Exception(record.getMessage()))


@contextlib.contextmanager
def _quiet_disk_full_logs():
    handler_filter = _DropDiskFullRecords()
    logger = logging.getLogger("absl")
    logger.addFilter(handler_filter)
    try:
        yield
    finally:
        logger.removeFilter(handler_filter)


def _raise_if_disk_full(error: BaseException, path: Path) -> None:
    if _is_disk_full(error):
        for partial in path.parent.glob(f"{path.name}.orbax-checkpoint-tmp*"):  # give the space back
            shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(
            f"disk full while writing checkpoint {path}: {str(error).splitlines()[0][:200]}. Nothing was "
            "saved there and the previous checkpoints are kept; free space on that disk (or point "
            "--workdir elsewhere) and rerun the same command to resume") from None


def _checkpointer() -> ocp.Checkpointer:
    # Synchronous: zoo and test checkpoints are small, and callers expect the directory to be
    # complete when save_tree returns. Process-local: in a multi-process run each process saves
    # and restores its own (local) arrays without waiting for the others (the zoo is written by
    # process 0 alone, free_jax.distributed); only TrainingCheckpoints saves global arrays.
    if jax.process_count() == 1:
        return ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    process = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=process, active_processes={process},
                                               barrier_sync_key_prefix=f"local{process}")
    handler = ocp.CompositeCheckpointHandler(
        composite_options=ocp.CompositeOptions(multiprocessing_options=local),
        **{_TREE: ocp.StandardCheckpointHandler(multiprocessing_options=local),
           _METADATA: ocp.JsonCheckpointHandler(multiprocessing_options=local),
           _CHECKSUMS: ocp.JsonCheckpointHandler(multiprocessing_options=local)})
    return ocp.Checkpointer(handler, multiprocessing_options=local)


def save_tree(directory: str | Path, tree: Any, metadata: dict | None = None, *,
              overwrite: bool = False) -> Path:
    """Writes ``tree`` (a pytree of arrays) and optional JSON ``metadata`` to ``directory``.

    Args:
      directory: destination; must not exist unless ``overwrite``.
      tree: pytree of jax or numpy arrays (dicts, lists, tuples, flax structs of arrays).
      metadata: JSON-serialisable dict stored next to the arrays (``read_metadata`` reads it
        without touching the arrays).
      overwrite: replace an existing checkpoint at ``directory``.

    Returns:
      The absolute path written.

    Raises:
      CheckpointError: ``directory`` exists and ``overwrite`` is False, or metadata is not
        JSON-serialisable.
    """
    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise CheckpointError(f"checkpoint {directory} already exists; pass overwrite=True or "
                              "choose another directory")
    if jax.process_count() > 1:   # Orbax takes no process-local jax.Array in multi-process runs; numpy it takes
        tree = jax.tree_util.tree_map(np.asarray, tree)
    items = {_TREE: ocp.args.StandardSave(tree), _CHECKSUMS: ocp.args.JsonSave(leaf_checksums(tree))}
    if metadata is not None:
        try:
            json.dumps(metadata)
        except TypeError as error:
            raise CheckpointError(f"metadata for {directory} is not JSON-serialisable: {error}") from error
        items[_METADATA] = ocp.args.JsonSave(metadata)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _checkpointer() as checkpointer:
            with _quiet_disk_full_logs():
                checkpointer.save(directory, args=ocp.args.Composite(**items), force=overwrite)
    except Exception as error:  # noqa: BLE001 - Orbax/tensorstore raise bare Exceptions
        _raise_if_disk_full(error, directory)
        raise
    return directory


def _require_checkpoint(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint at {directory}: the directory does not exist. Check the "
                              "path, or create the checkpoint first (e.g. rerun the pre-training)")
    if not (directory / _TREE).is_dir():
        raise CheckpointError(f"{directory} is not a complete free_jax checkpoint (no '{_TREE}' item; "
                              "an interrupted or foreign write?). Delete it and write it again")


def restore_tree(directory: str | Path, abstract_target: Any) -> Any:
    """Restores the pytree saved at ``directory`` onto ``abstract_target``.

    Args:
      directory: a directory written by ``save_tree``.
      abstract_target: the expected structure, e.g. ``jax.eval_shape(init_fn, ...)`` or a pytree
        of ``jax.ShapeDtypeStruct`` (concrete arrays also work; only shapes/dtypes are used).

    Returns:
      The restored pytree, leaves as ``jax.Array`` with the target's shapes and dtypes.

    Raises:
      CheckpointError: the checkpoint is missing, unreadable, or its structure, shapes or dtypes
        differ from ``abstract_target`` (the message names the path and the fix).
    """
    directory = Path(directory).absolute()
    _require_checkpoint(directory)
    abstract_target = jax.tree_util.tree_map(
        lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), abstract_target)
    if jax.process_count() > 1:   # restored as this process's numpy arrays (see save_tree), then put on device
        abstract_target = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract_target)
    items = {_TREE: ocp.args.StandardRestore(abstract_target)}
    if (directory / _CHECKSUMS).is_dir():
        items[_CHECKSUMS] = ocp.args.JsonRestore()
    try:
        with _checkpointer() as checkpointer:
            restored = checkpointer.restore(directory, args=ocp.args.Composite(**items))
    except Exception as error:  # noqa: BLE001 - a damaged data file surfaces as a bare Exception
        # from None: the first line of orbax's error is in the message; its trace runs to hundreds of lines.
        raise CheckpointError(
            f"cannot restore checkpoint {directory} onto the expected structure: {_first_line(error)}. The "
            "checkpoint was written for a different model/configuration or is corrupt; restore "
            "with the configuration it was written with, or delete it and write it again") from None
    tree = jax.tree_util.tree_map(jnp.asarray, restored[_TREE])
    _verify_checksums(tree, restored[_CHECKSUMS] if _CHECKSUMS in items else None, directory)
    return tree


def _first_line(error: BaseException) -> str:
    """The first line of an error (tensorstore errors run to hundreds of lines), at most 300 chars."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def read_metadata(directory: str | Path) -> dict:
    """The JSON metadata ``save_tree`` stored at ``directory`` (``{}`` if none was stored)."""
    directory = Path(directory).absolute()
    _require_checkpoint(directory)
    if not (directory / _METADATA).exists():
        return {}
    try:
        with _checkpointer() as checkpointer:
            restored = checkpointer.restore(
                directory, args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()}))
    except Exception as error:  # noqa: BLE001 - Orbax raises bare Exceptions on damaged files
        raise CheckpointError(f"cannot read the metadata of checkpoint {directory}: {_first_line(error)}. Delete "
                              "the checkpoint and write it again") from None
    return dict(restored[_METADATA])


# ------------------------------------------------------------------ training checkpoints
class TrainingCheckpoints:
    """Checkpoints of a training run, through two Orbax ``CheckpointManager``s.

    ``<directory>/latest/<step>``: the last ``keep`` whole training states (for exact resume),
    each with JSON metadata (e.g. the best meta-validation accuracy so far).
    ``<directory>/best/<step>``: the meta-learner parameters selected on meta-*validation*.

    Saves are synchronous: when ``save`` returns, the checkpoint is complete (Orbax writes to a
    temporary directory and renames it, so an interrupted save leaves no half checkpoint).
    Saves are idempotent: a step that already exists (left by a run killed before its next
    save) is replaced, so a rerun never stops on it. A tree holding NaN/inf is never saved
    (``NonFiniteStateError``). ``restore`` checks every array against its checksum and falls
    back to the newest intact step, with a warning naming each damaged one.
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        directory = Path(directory).absolute()
        self.directory = directory
        self._latest = ocp.CheckpointManager(
            directory / "latest", item_names=("state", _METADATA, _CHECKSUMS),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self._best = ocp.CheckpointManager(
            directory / "best", item_names=("params", _METADATA, _CHECKSUMS),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def latest_step(self) -> int | None:
        """Step of the newest complete state checkpoint, or None."""
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.latest_step()

    def _save(self, manager, step: int, name: str, tree: Any, metadata: dict) -> None:
        path = Path(manager.directory) / str(int(step))
        bad = non_finite_leaves(tree)
        if bad:
            raise NonFiniteStateError(
                f"not saving {path}: {len(bad)} arrays hold NaN/inf (first: {', '.join(bad[:3])}). "
                "The previous checkpoints are kept")
        if int(step) in manager.all_steps():
            manager.delete(int(step))  # left by a run killed before its next save; same step, same state
        try:
            with _quiet_disk_full_logs():
                manager.save(int(step), args=ocp.args.Composite(
                    **{name: ocp.args.StandardSave(tree), _METADATA: ocp.args.JsonSave(metadata),
                       _CHECKSUMS: ocp.args.JsonSave(leaf_checksums(tree))}), force=True)
                manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001 - tensorstore reports a full disk as a bare Exception
            _raise_if_disk_full(error, path)
            raise

    def _restore(self, manager, step: int, name: str, abstract_target: Any):
        # A target leaf's sharding (e.g. replicated over the run's mesh, free_jax.sharding) is kept:
        # in a multi-process run every process restores its share of the global arrays.
        abstract_target = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf),
                                              sharding=getattr(leaf, "sharding", None)
                                              if isinstance(leaf, jax.ShapeDtypeStruct) else None),
            abstract_target)
        path = Path(manager.directory) / str(step)
        if not (path / _METADATA).is_dir():
            raise CheckpointError(
                f"training checkpoint {path} has no '{_METADATA}' item (an interrupted copy, or a file removed "
                f"by hand), so it cannot be resumed. Delete {path}; the run then resumes from the previous "
                "checkpoint, or starts over if there is none")
        items = {name: ocp.args.StandardRestore(abstract_target), _METADATA: ocp.args.JsonRestore()}
        if (path / _CHECKSUMS).is_dir():
            items[_CHECKSUMS] = ocp.args.JsonRestore()
        try:
            restored = manager.restore(int(step), args=ocp.args.Composite(**items))
        except Exception as error:  # noqa: BLE001 - a damaged data file surfaces as a bare Exception
            # from None: the first line of orbax's error is in the message; its trace runs to hundreds of lines.
            raise CheckpointError(
                f"cannot restore training checkpoint {path}: {_first_line(error)}. It was written by a run with "
                "a different configuration (model, image size, zoo, bank) or is corrupt. Resume with the "
                "configuration it was written with, or delete it (the previous checkpoint is then used) or "
                "use a new --workdir") from None
        _verify_checksums(restored[name], restored[_CHECKSUMS] if _CHECKSUMS in items else None, path)
        return restored[name], dict(restored[_METADATA] or {})

    def save(self, step: int, state: Any, metadata: dict) -> None:
        """Saves the whole training state at ``step``; keeps the newest ``keep``."""
        self._save(self._latest, step, "state", state, metadata)

    def restore(self, abstract_state: Any, step: int | None = None):
        """(state, metadata) of ``step`` restored onto ``abstract_state``.

        Without ``step``: the newest intact checkpoint; each newer one that fails to restore
        (corrupt, truncated, incomplete) is skipped with a warning naming it. If none restores,
        the error of the newest is raised.
        """
        if step is not None:
            return self._restore(self._latest, step, "state", abstract_state)
        steps = sorted(self._latest.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no training checkpoint under {self.directory / 'latest'}")
        first_error = None
        for candidate in steps:
            try:
                restored = self._restore(self._latest, candidate, "state", abstract_state)
            except CheckpointError as error:
                first_error = first_error or error
                continue
            if first_error is not None:
                warnings.warn(f"skipped damaged training checkpoint(s) newer than step {candidate}: {first_error}",
                              stacklevel=2)
            return restored
        raise first_error

    def restore_raw(self, step: int | None = None):
        """The saved state of ``step`` (default newest) as stored, without a target (for inspection)."""
        step = self.latest_step() if step is None else step
        return self._latest.restore(int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]

    def save_best(self, step: int, params: Any, metadata: dict) -> None:
        """Saves the meta-learner parameters chosen on meta-validation (replacing the previous)."""
        self._save(self._best, step, "params", params, metadata)

    def restore_best(self, abstract_params: Any):
        """(params, metadata) of the selected meta-learner, or None if none was saved."""
        step = self.best_step()
        if step is None:
            return None
        return self._restore(self._best, step, "params", abstract_params)

    def close(self) -> None:
        self._latest.close()
        self._best.close()
