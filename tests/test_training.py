"""FREE training: fused == phased iteration, end-to-end runs, exact resume, model selection, errors."""
import dataclasses
import io
import json
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from free_jax import checkpointing, data as data_lib, evaluation, memory, models
from free_jax.data import registry as data_registry
from free_jax.inversion import InversionConfig
from free_jax.meta.replay import ReplayConfig
from free_jax.models.learner import create_meta_learner
from free_jax.progress import ProgressLine
from free_jax.training import evaldata, loop, step as step_lib
from free_jax.training.state import init_state
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.store import Zoo

from conftest import glyph_smoke_config as smoke_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "configs"))
import glyphs as glyph_configs  # noqa: E402


def tiny_setup():
    shape, num_teachers = (16, 16, 1), 2
    module = models.build_backbone("conv4", 5, 8)
    variables = [models.init_variables(module, jax.random.key(i), shape) for i in range(num_teachers)]
    group = TeacherGroup(variables=jax.tree_util.tree_map(lambda *a: jnp.stack(a), *variables),
                         class_ids=jnp.arange(10, dtype=jnp.int32).reshape(2, 5), mean=jnp.full((2, 1), 0.5),
                         std=jnp.full((2, 1), 0.3), module=module, arch="conv4", image_shape=shape)
    inversion = InversionConfig(way=5, images_per_class=4, nz=16, ngf=8, k=2, flip=False)
    config = step_lib.StepConfig(inversion=inversion, replay=ReplayConfig(
        way=5, shot=1, query=3, tasks_per_batch=2, batches=2, inner_steps=2))
    make = lambda: init_state(jax.random.key(0), meta_arch="conv4", meta_width=8, way=5, image_shape=shape,
                              mean=[0.5], std=[0.3], inversion=inversion, outer_lr=1e-3, num_classes_total=10,
                              bank_capacity=20, bank_dtype="uint8")
    return make, group, config


def test_replay_host_loop_with_patience_equals_replay_in_one_program():
    """The training loop's replay (a host loop over one jitted meta-batch) computes what the
    fused iteration's replay (lax.while_loop) does under the patience rule, stopping after the
    same number of meta-batches (the fixed budget's lax.scan: the phased == fused test above)."""
    patience = 1
    make, group, config = tiny_setup()
    config = dataclasses.replace(config, replay=dataclasses.replace(config.replay, batches=4, patience=patience))
    state = make()      # 4 random images for every class of the bank (replay reads only the bank)
    bank, per_class = state.bank, 4
    labels = jnp.repeat(jnp.arange(bank.num_classes, dtype=jnp.int32), per_class)
    state = state.replace(bank=jax.jit(memory.add)(
        bank, jax.random.uniform(jax.random.key(4), (len(labels), *bank.image_shape)), labels))
    copy = jax.tree_util.tree_map(jnp.copy, state)
    host, host_metrics = step_lib.replay_phase(state, config)
    fused, fused_metrics = jax.jit(step_lib._replay_in_one_program, static_argnames="config")(copy, config)
    assert int(host_metrics["replay_batches"]) == int(fused_metrics["replay_batches"])
    assert 1 <= int(host_metrics["replay_batches"]) <= 4
    for name in ("replay_loss", "replay_accuracy"):
        np.testing.assert_allclose(host_metrics[name], fused_metrics[name], rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(host.meta_learner.params, fused.meta_learner.params, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(host.meta_opt_state, fused.meta_opt_state, rtol=1e-4, atol=1e-5)


def test_align_phase_uses_the_configured_inner_optimizer():
    """``StepConfig.align_optimizer`` reaches ``alignment_gradient``: one SGD step per teacher
    (lr 1e-3) moves θ̃ far less than one Adam step, so θ after the alignment update differs."""
    make, group, config = tiny_setup()
    images = jax.random.uniform(jax.random.key(3), (group.size, config.inversion.batch_size, 16, 16, 1))
    params = {}
    for name in ("adam", "sgd"):
        named = dataclasses.replace(config, align_optimizer=name)
        state, metrics = step_lib.align_phase(make(), [group], [images], named)
        assert np.isfinite(float(metrics["kd_loss"]))
        params[name] = state.meta_learner.params
    leaves = zip(jax.tree_util.tree_leaves(params["adam"]), jax.tree_util.tree_leaves(params["sgd"]))
    assert any(not np.allclose(a, b) for a, b in leaves)
    with pytest.raises(ValueError, match=r"align_optimizer='lbfgs'; choose one of \('adam', 'sgd'\)"):
        dataclasses.replace(config, align_optimizer="lbfgs")



@pytest.fixture(scope="module")
def uninterrupted(glyph_smoke_run):
    """The shared whole smoke run (3 iterations, warm-up 1, meta-val every iteration), as
    (root, results, eval splits); its workdir is root/"run" and its zoo root/"run"/"zoo"."""
    workdir, results, calls = glyph_smoke_run
    return workdir.parent, results, calls


@pytest.mark.slow
def test_end_to_end_smoke_writes_every_output(uninterrupted):
    root, results, _ = uninterrupted
    run = root / "run"
    for name in ("results.md", "results.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert list(run.glob("recovered_*.png")) and list((run / "tensorboard").iterdir())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "inv_ce" in line] == [0, 1, 2]
    for value in results["test"].values():
        assert 0.0 <= value["free"][0] <= 100.0 and value["free"][1] >= 0.0
    assert "random init" in (run / "results.md").read_text()


@pytest.mark.slow
def test_meta_validation_not_meta_test_selects_the_checkpoint(uninterrupted):
    root, results, calls = uninterrupted
    assert calls == ["val", "test"]                     # meta-test is loaded only after training
    lines = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    val = {line["step"] + 1: line["val_accuracy"] for line in lines if "val_accuracy" in line}
    best_step = max(val, key=lambda s: (val[s], -s))    # first iteration reaching the maximum
    assert results["best_step"] == best_step and results["best_val"] == pytest.approx(val[best_step])
    assert checkpointing.TrainingCheckpoints(root / "run" / "checkpoints").best_step() == best_step


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(uninterrupted, tmp_path):
    root, results, _ = uninterrupted
    interrupted = tmp_path / "run"
    phases = (step_lib.recover_phase, step_lib.align_phase, step_lib.replay_batch_phase)
    step_lib.recover_phase.clear_cache()
    loop.run(smoke_config(root / "run" / "zoo", iterations=2), interrupted, log=lambda *_: None)   # "killed" after 2
    programs = [phase._cache_size() for phase in phases]
    # The warm-up iteration, the later ones and the recovered-image grid ran one recovery program.
    assert programs[0] == 1 and (interrupted / "recovered_000002.png").is_file()
    resumed = loop.run(smoke_config(root / "run" / "zoo"), interrupted, log=lambda *_: None)
    # The restored state is placed as the fresh one was (committed to the device), so the resumed
    # run calls the programs the first part compiled instead of compiling them again.
    assert [phase._cache_size() for phase in phases] == programs
    assert resumed["test"] == results["test"]
    assert (resumed["best_step"], resumed["best_val"]) == (results["best_step"], results["best_val"])
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]
    assert read(interrupted / "metrics.jsonl") == read(root / "run" / "metrics.jsonl")
    # The final whole states (θ, optimisers, φ, bank, key, step) are bit-identical.
    a, b = _final_state(root / "run"), _final_state(interrupted)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_iteration_program_is_phased_on_cpu_and_fused_on_accelerators():
    assert step_lib.iteration_program("auto", "cpu") == "phased"
    assert step_lib.iteration_program("auto", "gpu") == step_lib.iteration_program("auto", "tpu") == "fused"
    assert step_lib.iteration_program("fused", "cpu") == "fused"
    assert step_lib.iteration_program("phased", "gpu") == "phased"
    with pytest.raises(ValueError, match=r"iteration='one'; choose one of \('auto', 'fused', 'phased'\)"):
        step_lib.iteration_program("one", "cpu")
    config = smoke_config("unused")
    config.iteration = "one"
    with pytest.raises(ValueError, match=r"--config.iteration='one' is invalid"):
        loop.run(config, "unused-workdir", log=lambda *_: None)
    config.iteration, config.inversion.kernel_gradient = "auto", "im2col"
    with pytest.raises(ValueError, match=r"--config.inversion.kernel_gradient='im2col' is invalid"):
        loop.run(config, "unused-workdir", log=lambda *_: None)
    config.inversion.kernel_gradient, config.inversion.teachers_in_flight = "auto", -1
    with pytest.raises(ValueError, match=r"--config.inversion.teachers_in_flight=-1 is invalid: it must be an integer"):
        loop.run(config, "unused-workdir", log=lambda *_: None)
    config.inversion.teachers_in_flight, config.replay.inner_loop = 2, "while"
    with pytest.raises(ValueError, match=r"--config.replay.inner_loop='while' is invalid: it must be one of "
                                         r"\('unroll', 'scan'\)"):
        loop.run(config, "unused-workdir", log=lambda *_: None)


@pytest.mark.slow
def test_fused_program_trains_like_the_phased_one_and_waits_for_the_device_only_at_logged_iterations(
        uninterrupted, tmp_path):
    """``--config.iteration=fused`` (the accelerators' default) through the whole loop: one program
    per iteration, timed as "iteration"; with log_every=4 over 4 iterations (warm-up 1) only the
    compiling iterations (0: warm-up, 1: first full) and the logged last one wait for the device
    and read their metrics; iteration 2 is neither timed nor logged. The same run with the phased
    programs (CPU's default: recovery, alignment, replay batches) ends in the same state: the fused
    iteration computes what the phases do, warm-up and full iterations alike."""
    root, _, _ = uninterrupted
    runs = {}
    for iteration in ("fused", "phased"):
        config = smoke_config(root / "run" / "zoo", iterations=4, log_every=4, iteration=iteration,
                              keep_checkpoints=4)
        runs[iteration] = loop.run(config, tmp_path / iteration, log=lambda *_: None)
    results = runs["fused"]
    phases = results["phase_seconds"]
    assert set(phases) == {"iteration", "evaluation"} and phases["iteration"]["calls"] == 3
    assert {"recovery", "alignment", "replay"} <= set(runs["phased"]["phase_seconds"])
    lines = [json.loads(line) for line in (tmp_path / "fused" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "replay_loss" in line] == [3]
    assert [line["step"] for line in lines if "val_accuracy" in line] == [1, 2, 3]
    assert all(np.isfinite(line["replay_loss"]) for line in lines if "replay_loss" in line)
    assert all(set(line) >= {"inv_ce", "kd_loss", "replay_loss", "replay_accuracy"}
               for line in lines if "replay_loss" in line)                # the fused iteration's metrics
    assert results["test"] and all(0.0 <= value["free"][0] <= 100.0 for value in results["test"].values())
    for step in (1, 4):                 # after the warm-up iteration, and at the end
        fused, phased = (_final_state(tmp_path / iteration, step) for iteration in ("fused", "phased"))
        assert int(fused["step"]) == int(phased["step"]) == step
        np.testing.assert_array_equal(fused["bank"]["counts"], phased["bank"]["counts"])
        assert (int(fused["bank"]["counts"].sum()) > 0) == (step > 1)          # warm-up stores nothing
        chex.assert_trees_all_close(fused["meta_learner"], phased["meta_learner"], rtol=1e-4, atol=1e-5)
        chex.assert_trees_all_close(fused["gen_params"], phased["gen_params"], rtol=1e-4, atol=1e-5)


class TrainingImagesLoaded(RuntimeError):
    pass


@pytest.mark.slow
def test_free_run_needs_no_training_images_once_the_zoo_exists(uninterrupted, tmp_path, monkeypatch):
    """Data-freedom is structural: with the zoo built, the meta-train split cannot be loaded and
    the run still trains (input normalisation from the teachers' specs), computing exactly what
    the shared run with the split available computed; only meta-val/test images are read."""
    root, _, _ = uninterrupted
    config = smoke_config(root / "run" / "zoo", iterations=2)
    splits = [data_lib.load_split(n, "train", **evaldata.data_options(config, n)) for n in config.datasets]
    image_shape, mean, std = loop.meta_learner_input(config, Zoo.load(root / "run" / "zoo").specs)
    assert image_shape == (config.image_size, config.image_size, splits[0].channels)
    np.testing.assert_array_equal(mean, np.mean([s.mean for s in splits], axis=0))     # what the split gives
    np.testing.assert_array_equal(std, np.mean([s.std for s in splits], axis=0))
    original = data_lib.load_split

    def without_train(name, split, *args, **kwargs):
        if split == "train":
            raise TrainingImagesLoaded(f"the FREE run tried to load the meta-train split of {name}")
        return original(name, split, *args, **kwargs)

    monkeypatch.setattr(data_lib, "load_split", without_train)
    monkeypatch.setattr(data_registry, "load_split", without_train)
    results = loop.run(config, tmp_path / "run", log=lambda *_: None)
    assert results["best_step"] == 2 and set(results["test"])
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]
    assert read(tmp_path / "run" / "metrics.jsonl") == [
        line for line in read(root / "run" / "metrics.jsonl") if line["step"] < 2]


def _final_state(workdir, step=None):
    """The saved state of ``step`` (default the newest) as raw arrays (no abstract target needed
    for a comparison)."""
    manager = checkpointing.TrainingCheckpoints(Path(workdir) / "checkpoints")
    try:
        return manager.restore_raw(step)
    finally:
        manager.close()


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_phase_and_keeps_last_good_checkpoint(uninterrupted, tmp_path):
    root, _, _ = uninterrupted
    with pytest.raises(loop.NonFiniteLossError, match=r"kd_update_norm = (inf|nan) at iteration 1, in the alignment"):
        loop.run(smoke_config(root / "run" / "zoo", beta_align=float("inf")), tmp_path / "bad", log=lambda *_: None)
    assert checkpointing.TrainingCheckpoints(tmp_path / "bad" / "checkpoints").latest_step() == 1


@pytest.mark.slow
def test_mismatched_zoo_or_checkpoint_is_a_clear_error(uninterrupted):
    root, _, _ = uninterrupted
    with pytest.raises(ValueError, match="way"):
        loop.run(smoke_config(root / "run" / "zoo", way=4), root / "other", log=lambda *_: None)
    with pytest.raises(checkpointing.CheckpointError, match="different configuration|written for"):
        loop.run(smoke_config(root / "run" / "zoo", meta_width=16), root / "run", log=lambda *_: None)


def test_eta_leaves_out_the_compiling_first_iteration_of_each_kind():
    """On a fake clock: the first warm-up and the first full iteration each take 60 s (compilation),
    later warm-up iterations 1 s and full ones 3 s. The loop restarts the rate after each first
    one, so four iterations into the full ones the ETA is the 3 s pace times what is left (without
    the restarts it would be about 5× that)."""
    now = [0.0]
    stream = io.StringIO()
    line = ProgressLine(10, 0, name="free", unit="iterations", stream=stream, timer=lambda: now[0])
    for step in range(6):                               # warm-up 0, 1; full 2 .. 5
        now[0] += 60.0 if loop.first_of_its_kind(step, 0, 2) else (1.0 if step < 2 else 3.0)
        line.update(step + 1)
        if loop.first_of_its_kind(step, 0, 2):
            line.restart(step + 1)
    assert line.eta(6) == pytest.approx(4 * 3.0)
    assert stream.getvalue().endswith("[free] 6/10 iterations | 0.33 iterations/s | ETA 0:00:12   ")
    # A run resumed past the warm-up compiles only its first iteration.
    assert [s for s in range(5, 10) if loop.first_of_its_kind(s, 5, 2)] == [5]


def test_meta_test_shows_episodes_done_rate_and_setting(tmp_path):
    """The final meta-test (minutes at full size) prints one progress line over every setting:
    FREE then random init per shot, each domain's episodes counted as their chunks finish."""
    from test_evaluation import colour_split
    split = colour_split()
    episodes = {shot: evaluation.make_episodes(split, num_episodes=6, way=5, shot=shot, query=3, seed=shot)
                for shot in (1, 2)}
    domain = evaldata.EvalDomain("colours", jnp.asarray(split.images), episodes)
    config = ml_collections.ConfigDict({"way": 5, "image_size": 16, "strategy": "auto", "eval": {
        "test_shots": (1, 2), "steps": 0, "lr": 0.1, "chunk_size": 4, "inner_loop": "unroll"}})   # steps 0: quick
    learner = create_meta_learner(jax.random.key(0), "conv4", 5, (16, 16, 3), split.mean, split.std, width=8)
    timer, stream = step_lib.PhaseTimer(), io.StringIO()
    tests = loop.meta_test(learner, learner, [domain], config, timer, stream=stream)
    assert set(tests) == {1, 2} and all(set(t) == {"free", "random_init"} for t in tests.values())
    assert len(timer.seconds["evaluation"]) == 2                  # FREE's evaluations are timed
    shown = stream.getvalue()
    for count, setting in [(4, "1-shot colours: free"), (12, "1-shot colours: random_init"),
                           (18, "2-shot colours: free"), (24, "2-shot colours: random_init")]:
        assert f"[meta-test] {count}/24 episodes" in shown and setting in shown
    assert shown.rstrip().endswith("s") and "done in" in shown


@pytest.mark.slow
def test_rerun_of_a_finished_run_reuses_its_results(glyph_smoke_run, tmp_path, monkeypatch):
    """Rerunning the command of a finished run prints and returns its results at once: no
    evaluation, and results.md (with the phase times of the real run) is left as it was."""
    import shutil
    workdir, results, _ = glyph_smoke_run
    shutil.copytree(workdir, tmp_path / "run")
    before = (tmp_path / "run" / "results.md").read_bytes()
    monkeypatch.setattr(evaldata, "evaluate_domains", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(evaldata, "load_eval_domains", lambda *a, **k: pytest.fail("loaded eval data again"))
    logged = []
    again = loop.run(glyph_configs.get_config("smoke"), tmp_path / "run", log=logged.append)
    assert again == results
    assert (tmp_path / "run" / "results.md").read_bytes() == before
    assert "reused" in logged[0] and logged[1] == before.decode()
    other = glyph_configs.get_config("smoke")
    other.eval.test_episodes += 1                                   # another config: evaluated anew
    assert loop.finished_results(other, tmp_path / "run") is None
    other = glyph_configs.get_config("smoke")
    other.iterations += 1                                           # more iterations: trained on
    assert loop.finished_results(other, tmp_path / "run") is None
