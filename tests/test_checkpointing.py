"""Orbax save/restore helpers: bit-identical round trip, metadata, clear errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import checkpointing

# A failed restore leaves Orbax coroutines unawaited; that warning is not the behaviour under test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _tree():
    key = jax.random.key(0)
    return {"params": {"w": jax.random.normal(key, (2, 3, 4)), "b": jnp.arange(4, dtype=jnp.float32)},
            "batch_stats": {"mean": np.linspace(0, 1, 5).astype(np.float32)},
            "step": jnp.asarray(7, jnp.int32)}


def test_round_trip_is_bit_identical_and_keeps_metadata(tmp_path):
    tree = _tree()
    checkpointing.save_tree(tmp_path / "ckpt", tree, {"name": "x", "sizes": [1, 2]})
    restored = checkpointing.restore_tree(tmp_path / "ckpt", jax.eval_shape(lambda: tree))
    chex.assert_trees_all_equal(restored, jax.tree_util.tree_map(jnp.asarray, tree))
    assert restored["step"].dtype == jnp.int32
    assert checkpointing.read_metadata(tmp_path / "ckpt") == {"name": "x", "sizes": [1, 2]}


def test_existing_directory_needs_overwrite(tmp_path):
    tree = _tree()
    checkpointing.save_tree(tmp_path / "ckpt", tree)
    with pytest.raises(checkpointing.CheckpointError, match="already exists"):
        checkpointing.save_tree(tmp_path / "ckpt", tree)
    tree2 = jax.tree_util.tree_map(lambda leaf: leaf + 1, tree)
    checkpointing.save_tree(tmp_path / "ckpt", tree2, overwrite=True)
    restored = checkpointing.restore_tree(tmp_path / "ckpt", tree2)
    chex.assert_trees_all_close(restored, tree2)
    assert checkpointing.read_metadata(tmp_path / "ckpt") == {}


def test_missing_wrong_structure_and_wrong_shape_are_clear_errors(tmp_path):
    tree = _tree()
    with pytest.raises(checkpointing.CheckpointError, match="does not exist"):
        checkpointing.restore_tree(tmp_path / "absent", tree)
    checkpointing.save_tree(tmp_path / "ckpt", tree)
    wrong_structure = dict(tree, extra=jnp.zeros(2))
    with pytest.raises(checkpointing.CheckpointError, match=str(tmp_path / "ckpt")):
        checkpointing.restore_tree(tmp_path / "ckpt", wrong_structure)
    wrong_shape = dict(tree, params={"w": jnp.zeros((3, 3, 4)), "b": tree["params"]["b"]})
    with pytest.raises(checkpointing.CheckpointError, match="different model"):
        checkpointing.restore_tree(tmp_path / "ckpt", wrong_shape)
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpointing.CheckpointError, match="not a complete"):
        checkpointing.restore_tree(tmp_path / "empty", tree)
