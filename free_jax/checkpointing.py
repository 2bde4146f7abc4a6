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

Errors are ``CheckpointError`` (a ``ValueError``) naming the path and the fix.

Intended to grow a training ``CheckpointManager`` wrapper next to these helpers; keep all Orbax
imports in this file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

_TREE = "tree"
_METADATA = "metadata"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match the expected structure."""


def _checkpointer() -> ocp.Checkpointer:
    # Synchronous: zoo and test checkpoints are small, and callers expect the directory to be
    # complete when save_tree returns.
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


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
    items = {_TREE: ocp.args.StandardSave(tree)}
    if metadata is not None:
        try:
            json.dumps(metadata)
        except TypeError as error:
            raise CheckpointError(f"metadata for {directory} is not JSON-serialisable: {error}") from error
        items[_METADATA] = ocp.args.JsonSave(metadata)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _checkpointer() as checkpointer:
        checkpointer.save(directory, args=ocp.args.Composite(**items), force=overwrite)
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
    try:
        with _checkpointer() as checkpointer:
            restored = checkpointer.restore(
                directory, args=ocp.args.Composite(**{_TREE: ocp.args.StandardRestore(abstract_target)}))
    except (ValueError, KeyError, TypeError, FileNotFoundError, OSError) as error:
        raise CheckpointError(
            f"cannot restore checkpoint {directory} onto the expected structure: {error}. The "
            "checkpoint was written for a different model/configuration or is corrupt; restore "
            "with the configuration it was written with, or delete it and write it again") from error
    return jax.tree_util.tree_map(jnp.asarray, restored[_TREE])


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
    except (ValueError, KeyError, FileNotFoundError, OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read the metadata of checkpoint {directory}: {error}. Delete "
                              "the checkpoint and write it again") from error
    return dict(restored[_METADATA])


# ------------------------------------------------------------------ training checkpoints
class TrainingCheckpoints:
    """Checkpoints of a training run, through two Orbax ``CheckpointManager``s.

    ``<directory>/latest/<step>``: the last ``keep`` whole training states (for exact resume),
    each with JSON metadata (e.g. the best meta-validation accuracy so far).
    ``<directory>/best/<step>``: the meta-learner parameters selected on meta-*validation*.

    Saves are synchronous: when ``save`` returns, the checkpoint is complete (Orbax writes to a
    temporary directory and renames it, so an interrupted save leaves no half checkpoint).
    """

    def __init__(self, directory: str | Path, keep: int = 2):
        directory = Path(directory).absolute()
        self.directory = directory
        self._latest = ocp.CheckpointManager(
            directory / "latest", item_names=("state", _METADATA),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self._best = ocp.CheckpointManager(
            directory / "best", item_names=("params", _METADATA),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

    def latest_step(self) -> int | None:
        """Step of the newest complete state checkpoint, or None."""
        return self._latest.latest_step()

    def best_step(self) -> int | None:
        return self._best.latest_step()

    def _save(self, manager, step: int, name: str, tree: Any, metadata: dict) -> None:
        manager.save(int(step), args=ocp.args.Composite(
            **{name: ocp.args.StandardSave(tree), _METADATA: ocp.args.JsonSave(metadata)}), force=True)
        manager.wait_until_finished()

    def _restore(self, manager, step: int, name: str, abstract_target: Any):
        abstract_target = jax.tree_util.tree_map(
            lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf)), abstract_target)
        path = manager.directory / str(step)
        try:
            restored = manager.restore(int(step), args=ocp.args.Composite(
                **{name: ocp.args.StandardRestore(abstract_target), _METADATA: ocp.args.JsonRestore()}))
        except (ValueError, KeyError, TypeError, FileNotFoundError, OSError) as error:
            raise CheckpointError(
                f"cannot restore training checkpoint {path}: {error}. It was written by a run with a "
                "different configuration (model, image size, zoo, bank) or is corrupt. Resume with the "
                "configuration it was written with, or use a new --workdir") from error
        return restored[name], dict(restored[_METADATA] or {})

    def save(self, step: int, state: Any, metadata: dict) -> None:
        """Saves the whole training state at ``step``; keeps the newest ``keep``."""
        self._save(self._latest, step, "state", state, metadata)

    def restore(self, abstract_state: Any, step: int | None = None):
        """(state, metadata) of ``step`` (default: newest) restored onto ``abstract_state``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no training checkpoint under {self.directory / 'latest'}")
        return self._restore(self._latest, step, "state", abstract_state)

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
