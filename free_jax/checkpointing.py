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
