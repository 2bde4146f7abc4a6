"""An on-disk cache of generated numpy arrays, keyed by generator version and parameters.

Layout: ``<root>/<name>/<key>/{data.npz, manifest.json}`` where ``key`` hashes the parameters.
An entry is written into a temporary directory and renamed into place only when complete,
and its manifest records the SHA-256 of ``data.npz``; a missing, partial or corrupt entry
(bad checksum, unreadable archive, other parameters) is detected, removed and rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from free_jax import distributed

CACHE_ENV_VAR = "FREE_JAX_CACHE_DIR"
_DATA_FILE = "data.npz"
_MANIFEST_FILE = "manifest.json"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """``override`` if given, else ``$FREE_JAX_CACHE_DIR``, else ``~/.cache/free_jax``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "free_jax"


def cache_key(params: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-serialisable parameters."""
    blob = json.dumps(params, sort_keys=True, ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def entry_dir(name: str, params: Mapping[str, Any], root: str | os.PathLike | None = None) -> Path:
    """The directory an entry for ``params`` lives in (it may not exist)."""
    return cache_root(root) / name / cache_key(params)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_entry(path: Path, params: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The arrays of a valid entry, or None (with the reason logged) when it is not valid."""
    manifest_path, data_path = path / _MANIFEST_FILE, path / _DATA_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") != json.loads(json.dumps(params, sort_keys=True)):
            raise ValueError("parameters differ")
        if _sha256(data_path) != manifest["sha256"]:
            raise ValueError("checksum mismatch")
        with np.load(data_path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        expected = manifest["arrays"]
        got = {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()}
        if got != expected:
            raise ValueError(f"arrays {got} differ from manifest {expected}")
        return arrays
    except Exception as err:  # Any damage means: rebuild.
        logging.warning("free_jax cache entry %s is invalid (%s: %s); regenerating it.",
                        path, type(err).__name__, err)
        return None


def _write_entry(path: Path, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        np.savez(tmp / _DATA_FILE, **arrays)
        manifest = {
            "params": json.loads(json.dumps(params, sort_keys=True)),
            "sha256": _sha256(tmp / _DATA_FILE),
            "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
        }
        (tmp / _MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:  # Another process finished the same entry first: keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_arrays(name: str, params: Mapping[str, Any],
                  build: Callable[[], Mapping[str, np.ndarray]],
                  root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Returns the arrays cached for ``(name, params)``, building and storing them if needed.

    Args:
      name: a namespace, e.g. ``"glyphs"``.
      params: JSON-serialisable parameters (include a generator version); they key the entry.
      build: makes the arrays when the entry is missing or invalid.
      root: cache root; see ``cache_root``.
    """
    path = entry_dir(name, params, root)
    arrays = _read_entry(path, params)
    if arrays is not None:
        return arrays
    arrays = {k: np.asarray(v) for k, v in build().items()}
    if not distributed.is_primary():   # multi-process runs: process 0 alone writes (it builds the same arrays)
        return arrays
    try:
        _write_entry(path, params, arrays)
    except OSError as err:  # A read-only cache must not stop the caller.
        logging.warning("could not write free_jax cache entry %s: %s", path, err)
    return arrays
