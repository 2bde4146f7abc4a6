"""Fault injection: crashes between saves, damaged files, full disks, NaN states, concurrent runs,
bad configurations and arguments. Each fault ends in a resume that equals an uninterrupted run or
a clear error naming the problem; never a silently wrong result, never a run that cannot restart.

Library-level wherever the fault can be set up on disk; one real run is SIGKILLed between its
best and latest saves (marked slow).
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax import checkpointing, evaluation
from free_jax.data.base import SplitData
from free_jax.models import build_backbone, init_variables
from free_jax.models.learner import create_meta_learner
from free_jax.training import loop, results as results_lib
from free_jax.training.validate import validate_config
from free_jax.training.workdir import WorkdirBusyError, workdir_lock
from free_jax.zoo import TeacherSpec, Zoo, build_or_load_zoo, group_name

from conftest import load_config_file

# A failed restore leaves Orbax coroutines unawaited; that warning is not the behaviour under test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

REPO = Path(__file__).resolve().parents[1]


def _tree(offset=0.0):
    return {"w": jnp.arange(4096, dtype=jnp.float32) + offset, "b": jnp.full((3, 5), 2.0 + offset),
            "count": jnp.asarray(7, jnp.int32)}


def _assert_equal(a, b):
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, a), jax.tree_util.tree_map(np.asarray, b))


def _data_files(directory: Path) -> list[Path]:
    """The array data files (OCDBT chunks) below an Orbax checkpoint directory."""
    return [p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"]


def _damage(directory: Path, how: str) -> list[Path]:
    """Damages every data file below ``directory``: 16 bytes in the middle inverted ("flip"), or
    the second half cut off ("truncate"). Every file, not one: damaging only the biggest file left
    a checkpoint that loaded, checksums verified, in 1 of 30 zoo saves, so no restore read the
    damaged bytes (likely b-tree nodes that a later write superseded, as OCDBT only appends; not
    verified)."""
    targets = _data_files(directory)
    assert targets, f"no data files below {directory}"
    for target in targets:
        data = bytearray(target.read_bytes())
        if how == "flip":
            middle = len(data) // 2
            data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
        else:
            data = data[: len(data) // 2]
        target.write_bytes(bytes(data))
    return targets


# ------------------------------------------------------------------ 1. crash between two saves
def test_rerun_after_kill_between_best_and_latest_saves(tmp_path):
    """State on disk of a run killed after best/2 and before latest/2: the rerun redoes step 2."""
    first = checkpointing.TrainingCheckpoints(tmp_path)
    first.save(1, _tree(1.0), {"step": 1})
    first.save_best(2, _tree(2.0), {"step": 2})
    first.close()                                   # "killed" here: no latest/2
    rerun = checkpointing.TrainingCheckpoints(tmp_path)
    state, metadata = rerun.restore(_tree())
    _assert_equal(state, _tree(1.0))
    assert metadata == {"step": 1}
    rerun.save_best(2, _tree(2.0), {"step": 2})     # the same step again: replaced, no StepAlreadyExistsError
    rerun.save(2, _tree(2.0), {"step": 2})
    _assert_equal(rerun.restore(_tree())[0], _tree(2.0))
    _assert_equal(rerun.restore_best(_tree())[0], _tree(2.0))
    rerun.close()


def test_saving_an_existing_step_replaces_it(tmp_path):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(3, _tree(0.0), {"v": 0})
    checkpoints.save(3, _tree(5.0), {"v": 5})
    state, metadata = checkpoints.restore(_tree())
    _assert_equal(state, _tree(5.0))
    assert metadata == {"v": 5}
    checkpoints.close()


def test_a_save_killed_mid_write_leaves_nothing_in_the_way(tmp_path):
    """A kill inside Orbax's write leaves ``<step>.orbax-checkpoint-tmp``: not a step; the rerun's save replaces it."""
    first = checkpointing.TrainingCheckpoints(tmp_path)
    first.save(2, _tree(2.0), {})
    first.close()
    partial = tmp_path / "latest" / "3.orbax-checkpoint-tmp"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"half a write")
    rerun = checkpointing.TrainingCheckpoints(tmp_path)
    assert rerun.latest_step() == 2
    rerun.save(3, _tree(3.0), {})
    assert not partial.exists()
    _assert_equal(rerun.restore(_tree())[0], _tree(3.0))
    rerun.close()


# ------------------------------------------------------------------ 2. damaged files
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_latest_falls_back_to_previous_with_a_warning(tmp_path, how):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(1, _tree(1.0), {"step": 1})
    checkpoints.save(2, _tree(2.0), {"step": 2})
    _damage(tmp_path / "latest" / "2", how)
    with pytest.warns(UserWarning, match=str(tmp_path / "latest" / "2")):
        state, metadata = checkpoints.restore(_tree())
    _assert_equal(state, _tree(1.0))                # the intact step, bit-identical
    assert metadata == {"step": 1}
    with pytest.raises(checkpointing.CheckpointError, match=str(tmp_path / "latest" / "2")):
        checkpoints.restore(_tree(), step=2)        # asked for by number: no fallback
    checkpoints.close()


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(1, _tree(1.0), {})
    checkpoints.save(2, _tree(2.0), {})
    checkpoints.save_best(2, _tree(2.0), {})
    for directory in ("latest/1", "latest/2", "best/2"):
        _damage(tmp_path / directory, "flip")
    with pytest.raises(checkpointing.CheckpointError, match=f"{tmp_path / 'latest' / '2'}.*(corrupt|Delete)"):
        checkpoints.restore(_tree())
    with pytest.raises(checkpointing.CheckpointError, match=str(tmp_path / "best" / "2")):
        checkpoints.restore_best(_tree())
    checkpoints.close()


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_tree_checkpoint_is_an_error_never_changed_values(tmp_path, how):
    checkpointing.save_tree(tmp_path / "ckpt", _tree(), {"name": "x"})
    _damage(tmp_path / "ckpt", how)
    with pytest.raises(checkpointing.CheckpointError, match=str(tmp_path / "ckpt")):
        checkpointing.restore_tree(tmp_path / "ckpt", _tree())


def test_missing_metadata_item_names_the_checkpoint_and_falls_back(tmp_path):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(1, _tree(1.0), {"step": 1})
    checkpoints.save(2, _tree(2.0), {"step": 2})
    shutil.rmtree(tmp_path / "latest" / "2" / "metadata")
    with pytest.raises(checkpointing.CheckpointError, match=r"no 'metadata' item.*Delete .*latest/2"):
        checkpoints.restore(_tree(), step=2)
    with pytest.warns(UserWarning, match="no 'metadata' item"):
        state, _ = checkpoints.restore(_tree())
    _assert_equal(state, _tree(1.0))
    checkpoints.close()


def _tiny_zoo(offset=0.0) -> Zoo:
    shape, width, way = (16, 16, 3), 4, 3
    module = build_backbone("conv4", way, width)
    variables = jax.vmap(lambda k: init_variables(module, k, shape))(jax.random.split(jax.random.key(0), 2))
    variables = jax.tree_util.tree_map(lambda leaf: leaf + offset, variables)
    name = group_name("conv4", width, shape, way)
    specs = [TeacherSpec(id=i, arch="conv4", width=width, dataset="synthetic", split="train", class_ids=(0, 1, 2),
                         class_names=("a", "b", "c"), image_shape=shape, mean=(0.5,) * 3, std=(0.25,) * 3,
                         heldout_accuracy=0.5, best_epoch=1, epochs=1, heldout_history=(0.5,), seed=i,
                         run_index=i, group=name, group_index=i) for i in range(2)]
    return Zoo(specs, {name: variables}, {"offset": offset})


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_zoo_weights_are_an_error_naming_the_group(tmp_path, how):
    zoo = _tiny_zoo()
    zoo.save(tmp_path / "zoo")
    _damage(tmp_path / "zoo" / "groups", how)
    with pytest.raises(checkpointing.CheckpointError, match=f"teacher group .* of the zoo at {tmp_path / 'zoo'}"):
        Zoo.load(tmp_path / "zoo")


@pytest.mark.parametrize("text", ["{\"format\": 1, \"gro", "", "[1, 2]", "\xff\xfe garbage"])
def test_damaged_zoo_index_names_the_file_and_the_fix(tmp_path, text):
    _tiny_zoo().save(tmp_path / "zoo")
    (tmp_path / "zoo" / "zoo.json").write_text(text, errors="surrogateescape")
    with pytest.raises(ValueError, match=f"{tmp_path / 'zoo' / 'zoo.json'} is damaged.*Delete the zoo directory"):
        Zoo.load(tmp_path / "zoo")


# ------------------------------------------------------------------ 7. a kill inside Zoo.save
@pytest.mark.parametrize("index_written", [True, False])
def test_kill_between_the_renames_of_zoo_save_keeps_a_saved_zoo(tmp_path, index_written):
    """On disk after a kill between ``path → .old`` and ``.tmp → path``: no zoo at path."""
    path = tmp_path / "zoo"
    _tiny_zoo(0.0).save(path)
    _tiny_zoo(1.0).save(tmp_path / "new")
    path.rename(tmp_path / ".zoo.old")
    (tmp_path / "new").rename(tmp_path / ".zoo.tmp")
    if not index_written:                           # killed while the new zoo was still being written
        (tmp_path / ".zoo.tmp" / "zoo.json").unlink()
    assert Zoo.exists(path)
    loaded = Zoo.load(path)
    assert loaded.metadata == {"offset": 1.0 if index_written else 0.0}
    assert not (tmp_path / ".zoo.tmp").exists() or not index_written


def test_zero_teachers_is_a_clear_error_not_a_missing_zoo(tmp_path):
    with pytest.raises(ValueError, match=r"zoo.num_teachers=0 is too small"):
        build_or_load_zoo(str(tmp_path / "zoo"), {"num_teachers": 0, "datasets": ("glyphs",), "archs": ("conv4",)})
    assert not (tmp_path / "zoo").exists()


# ------------------------------------------------------------------ 3. NaN states
def test_non_finite_state_is_never_saved(tmp_path):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(1, _tree(1.0), {})
    bad = dict(_tree(2.0), b=jnp.full((3, 5), jnp.nan))
    with pytest.raises(checkpointing.NonFiniteStateError, match=r"\['b'\].*previous checkpoints are kept"):
        checkpoints.save(2, bad, {})
    with pytest.raises(checkpointing.NonFiniteStateError):
        checkpoints.save_best(2, bad, {})
    assert checkpoints.latest_step() == 1 and checkpoints.best_step() is None
    checkpoints.close()


def test_nan_between_logged_iterations_stops_before_the_save(tmp_path):
    """log_every > 1: the state went NaN at an unlogged iteration; the save refuses it and says why."""
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(2, _tree(1.0), {})
    bad = dict(_tree(2.0), w=jnp.full((4096,), jnp.inf))
    finite_metrics = {"kd_loss": jnp.asarray(0.5)}
    with pytest.raises(loop.NonFiniteLossError, match=r"iteration 3.*log_every=5.*last good checkpoint"):
        loop._finite_save(checkpoints.save, 3, finite_metrics, bad, {}, checkpoints.directory, log_every=5)
    with pytest.raises(loop.NonFiniteLossError, match=r"kd_loss = nan at iteration 3, in the alignment"):
        loop._finite_save(checkpoints.save, 3, {"kd_loss": jnp.asarray(jnp.nan)}, _tree(), {},
                          checkpoints.directory, log_every=5)
    assert checkpoints.latest_step() == 2
    checkpoints.close()


# ------------------------------------------------------------------ 4. disk full
def test_disk_full_during_a_save_is_a_clear_error(tmp_path, monkeypatch):
    checkpoints = checkpointing.TrainingCheckpoints(tmp_path)
    checkpoints.save(1, _tree(1.0), {})
    for error in (OSError(errno.ENOSPC, "No space left on device"),
                  Exception("RESOURCE_EXHAUSTED: Error writing local file \"...\": [OS error: No space left]")):
        def full(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(type(checkpoints._latest), "save", full)
        with pytest.raises(checkpointing.CheckpointError, match=r"disk full while writing .*latest/2.*free space"):
            checkpoints.save(2, _tree(2.0), {})
    monkeypatch.undo()
    _assert_equal(checkpoints.restore(_tree())[0], _tree(1.0))
    checkpoints.close()


_FILL_TMPFS = textwrap.dedent("""
    import sys, numpy as np
    from free_jax import checkpointing
    try:
        checkpointing.save_tree(sys.argv[1] + "/ckpt", {"w": np.random.default_rng(0).random(1 << 20, np.float32)})
    except checkpointing.CheckpointError as error:
        print("CLEAR:", error)
    import os
    print("LEFT:", os.listdir(sys.argv[1]))
""")


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    """A 256 KiB tmpfs in a private mount namespace (needs root and unshare; else skipped)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    script = (f"mount -t tmpfs -o size=256k tmpfs {mount_point} || exit 77; "
              f"exec {sys.executable} -c '{_FILL_TMPFS}' {mount_point}")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: cannot mount a small filesystem (the mocked disk-full test covers it)")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    if done.returncode == 77 or "Operation not permitted" in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:200]}); the mocked disk-full test covers it")
    assert "CLEAR: disk full while writing checkpoint" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "LEFT: []" in done.stdout                # the partial write was removed, its space given back
    assert len(done.stderr.splitlines()) <= 10, done.stderr[-3000:]   # no Orbax traceback before our error


# ------------------------------------------------------------------ 6. two processes, one workdir
def test_second_process_on_a_workdir_is_refused_and_a_dead_one_leaves_no_lock(tmp_path):
    with workdir_lock(tmp_path):
        with pytest.raises(WorkdirBusyError, match=rf"{tmp_path} is in use by another run \(process {os.getpid()}"):
            with workdir_lock(tmp_path):
                pass
        config = load_config_file("glyphs", "smoke")   # the training loop takes the same lock first thing
        with pytest.raises(WorkdirBusyError):
            loop.run(config, tmp_path, log=lambda *_: None)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from free_jax.training.workdir import workdir_lock
        with workdir_lock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusyError, match=f"process {holder.pid}"):
            with workdir_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lock(tmp_path):                    # released by the kernel when the holder died
        pass


# ------------------------------------------------------------------ 7. results.json is strict JSON
def test_results_json_of_phases_called_once_is_strict_json():
    config = load_config_file("glyphs", "smoke")
    report = results_lib.build_report(config, {}, 40.0, 2, {"recovery": [1.5], "replay": [2.0, 1.0, 3.0]}, start_step=2)
    text = json.dumps(report["json"], allow_nan=False)
    assert json.loads(text)["phase_seconds"]["recovery"]["median_after"] is None
    assert report["json"]["phase_seconds"]["replay"]["median_after"] == 2.0
    assert "| recovery | 1.50 | — | 1 |" in report["markdown"]


# ------------------------------------------------------------------ 5. bad configurations
@pytest.mark.parametrize("setting, value", [
    ("iterations", -5), ("way", 1), ("shot", 0), ("query", 0), ("teachers_per_iteration", 0),
    ("eval.val_episodes", 0), ("eval.test_episodes", 0), ("eval.query", 0), ("eval.every", 0),
    ("zoo.num_teachers", 0), ("checkpoint_every", 0), ("log_every", 0), ("outer_lr", -1.0),
    ("bank_dtype", "int4"), ("strategy", "pmap"), ("eval.test_shots", ()), ("eval.inner_loop", "while")])
def test_bad_setting_is_refused_before_any_work(tmp_path, setting, value):
    config = load_config_file("glyphs", "smoke")
    *parents, last = setting.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    with pytest.raises(ValueError, match=rf"--config\.{setting}="):
        validate_config(config)
    with pytest.raises(ValueError, match=rf"--config\.{setting}="):
        loop.run(config, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()          # refused before the workdir, zoo or data


def test_query_larger_than_a_class_fails_before_the_zoo(tmp_path):
    config = load_config_file("glyphs", "smoke")
    config.eval.query = 10_000
    with pytest.raises(ValueError, match=r"shot=1 \+ query=10000"):
        loop.run(config, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run" / "zoo").exists()


# ------------------------------------------------------------------ 5. bad library arguments
def _split(num_classes=5, per_class=6, size=16, channels=1):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    images = rng.integers(0, 256, (len(labels), size, size, channels)).astype(np.uint8)
    return SplitData(images, labels, tuple(f"c{c}" for c in range(num_classes)), (0.5,) * channels,
                     (0.25,) * channels, "synthetic", "test")


@pytest.mark.parametrize("argument, value", [("way", 1), ("way", 0), ("shot", 0), ("shot", -1), ("query", 0),
                                             ("num_episodes", 0), ("num_episodes", -1)])
def test_make_episodes_names_the_bad_argument(argument, value):
    arguments = dict(num_episodes=4, way=3, shot=1, query=2)
    arguments[argument] = value
    with pytest.raises(ValueError, match=rf"{argument}={value}"):
        evaluation.make_episodes(_split(), **arguments)


def test_make_episodes_rejects_labels_beyond_the_classes_and_too_many_queries():
    split = _split()
    bad_labels = SplitData(split.images, split.labels + 1, split.class_names, split.mean, split.std, "syn", "test")
    with pytest.raises(ValueError, match=r"split.labels .* 0 \.\. 4"):
        evaluation.make_episodes(bad_labels, 4, 3, 1, 2)
    with pytest.raises(ValueError, match=r"shot=1 \+ query=6"):
        evaluation.make_episodes(split, 4, 3, 1, 6)   # 6 images per class


def test_evaluate_rejects_float_other_size_and_too_few_images():
    split = _split()
    learner = create_meta_learner(jax.random.key(0), "conv4", 3, (16, 16, 1), (0.5,), (0.25,), 4)
    episodes = evaluation.make_episodes(split, 2, 3, 1, 2)
    with pytest.raises(ValueError, match=r"dtype float32.*uint8"):
        evaluation.evaluate(learner, split.images.astype(np.float32) / 255, episodes, steps=1)
    bigger = np.zeros((len(split.images), 32, 32, 1), np.uint8)   # Conv4 would run on it, near chance
    with pytest.raises(ValueError, match=r"\(32, 32, 1\).*\(16, 16, 1\)"):
        evaluation.evaluate(learner, bigger, episodes, steps=1, image_shape=(16, 16, 1))
    with pytest.raises(ValueError, match=r"takes \(H, W, 1\)"):
        evaluation.evaluate(learner, np.zeros((len(split.images), 16, 16, 3), np.uint8), episodes, steps=1)
    with pytest.raises(ValueError, match=r"only 10 images were given"):
        evaluation.evaluate(learner, split.images[:10], episodes, steps=1)


# ------------------------------------------------------------------ 1. a real run killed between saves
@pytest.mark.slow
def test_run_killed_between_best_and_latest_saves_resumes_to_the_same_result(tmp_path, glyph_smoke_run):
    """SIGKILL (FREE_JAX_KILL_AT) right after best/2 is saved, before latest/2; the rerun of the same
    command ends with the uninterrupted run's results, metrics and final state."""
    reference_dir, reference, _ = glyph_smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir / "zoo", workdir / "zoo")   # the zoo is not under test here
    command = [sys.executable, "experiments/train_free.py", "--config=experiments/configs/glyphs.py:smoke",
               f"--workdir={workdir}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", FREE_JAX_KILL_AT="after_best_save:2")
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (workdir / "checkpoints" / "best" / "2").is_dir() and not (workdir / "checkpoints" / "latest" / "2").exists()
    del env["FREE_JAX_KILL_AT"]
    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["test"] == json.loads(json.dumps(reference["test"]))
    assert (results["best_step"], results["best_val"]) == (reference["best_step"], reference["best_val"])
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]
    assert read(workdir / "metrics.jsonl") == read(reference_dir / "metrics.jsonl")
    finals = []
    for directory in (reference_dir, workdir):
        manager = checkpointing.TrainingCheckpoints(directory / "checkpoints")
        finals.append(manager.restore_raw())
        manager.close()
    for x, y in zip(jax.tree_util.tree_leaves(finals[0]), jax.tree_util.tree_leaves(finals[1])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
