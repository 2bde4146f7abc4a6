"""Interchangeable methods (--config.method) and meta-training objectives (--config.meta_objective).

One zoo serves every end-to-end run (``config.zoo_path``); runs are one warm-up and one full
iteration of the glyph smoke config, so each method's programs compile once at tiny shapes.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from free_jax import data as data_lib, models
from free_jax.inversion import InversionConfig
from free_jax.meta.replay import ReplayConfig
from free_jax.models.learner import MetaLearner
from free_jax.training import evaldata, loop, methods
from free_jax.training.config import step_config
from free_jax.training.step import StepConfig
from free_jax.training.validate import validate_config
from free_jax.zoo.spec import TeacherSpec, group_name
from free_jax.zoo.store import Zoo

from conftest import glyph_smoke_config

ROOT = Path(__file__).resolve().parents[1]


def smoke_config(method: str, zoo_path, **overrides):
    """glyphs:smoke with ``method``, the shared zoo, one warm-up and one full iteration, no grids."""
    return glyph_smoke_config(zoo_path, method=method, iterations=2, grid_every=0, **overrides)


# ----------------------------------------------------------------------------- errors
def test_unknown_method_or_objective_is_a_clear_error(tmp_path):
    config = smoke_config("maml", tmp_path / "zoo")
    with pytest.raises(ValueError, match=r"--config\.method='maml' is invalid: it must be one of \('free', "
                                         r"'fresh_generator', 'pixel', 'random', 'average', 'oracle_maml'\)"):
        loop.run(config, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()                      # failed before any work
    with pytest.raises(ValueError, match=r"--config\.meta_objective='distill' is invalid: it must be one of "
                                         r"\('bell', 'replay', 'align'\)"):
        validate_config(smoke_config("free", tmp_path, meta_objective="distill"))
    with pytest.raises(ValueError, match="oracle trains by MAML replay"):
        validate_config(smoke_config("oracle_maml", tmp_path, meta_objective="align"))
    with pytest.raises(ValueError, match=r"inversion\.lambda_adv=-1\.0 is invalid: it must be a number ≥ 0"):
        validate_config(smoke_config("free", tmp_path, **{"inversion.lambda_adv": -1.0}))
    with pytest.raises(ValueError, match="meta_arch='resnet10'.*architecture of the zoo"):
        validate_config(smoke_config("average", tmp_path, meta_arch="resnet10"))
    inversion, replay = InversionConfig(), ReplayConfig()
    with pytest.raises(ValueError, match=r"recovery='dream'; choose one of \('five', 'fresh_generator', 'pixel'\)"):
        StepConfig(inversion=inversion, replay=replay, recovery="dream")
    with pytest.raises(ValueError, match="objective must be 'replay'"):
        StepConfig(inversion=inversion, replay=replay, recovery=None, objective="bell")


def test_method_objective_and_ablations_parse_through_the_binary_flags(monkeypatch):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    argv = ["prog", f"--config={ROOT / 'experiments' / 'configs' / 'glyphs.py'}:smoke", "--config.method=pixel",
            "--config.meta_objective=replay", "--config.inversion.lambda_adv=0", "--config.inversion.lambda_bn=0.01"]
    monkeypatch.setattr("sys.argv", argv)          # config_flags reads the overrides from sys.argv
    flag_values(argv)
    config = flag_values.config
    validate_config(config)
    step = step_config(config)
    assert (step.recovery, step.objective) == ("pixel", "replay")
    assert (step.inversion.lambda_adv, step.inversion.lambda_bn, step.inversion.pixel_steps) == (0.0, 0.01, 2)
    expected = {"free": ("five", "replay"), "fresh_generator": ("fresh_generator", "replay"),
                "oracle_maml": (None, "replay"), "random": (None, "replay"), "average": (None, "replay")}
    for method, settings in expected.items():
        config.method = method
        assert (step_config(config).recovery, step_config(config).objective) == settings


# ----------------------------------------------------------------------------- average
def _random_variables(width: int, shape, seed: int):
    """Conv4-``width`` variables for ``shape`` inputs filled with random numbers (no init program to compile)."""
    module = models.build_backbone("conv4", 5, width)
    abstract = jax.eval_shape(lambda: models.init_variables(module, jax.random.key(0), shape))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), abstract)


def _fake_zoo(kinds):
    """A zoo of Conv4 teachers with random weights: ``kinds`` lists (width, side, count) per group."""
    specs, variables, teacher = [], {}, 0
    for width, side, count in kinds:
        shape = (side, side, 1)
        name = group_name("conv4", width, shape, 5)
        members = [_random_variables(width, shape, 100 + teacher + i) for i in range(count)]
        variables[name] = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *members)
        for index in range(count):
            specs.append(TeacherSpec(
                id=teacher, arch="conv4", width=width, dataset="glyphs", split="train",
                class_ids=tuple(range(5 * teacher, 5 * teacher + 5)), class_names=tuple("abcde"), image_shape=shape,
                mean=(0.5,), std=(0.3,), heldout_accuracy=0.5, best_epoch=1, epochs=1, heldout_history=(0.5,),
                seed=teacher, run_index=teacher, group=name, group_index=index))
            teacher += 1
    return Zoo(specs, variables)


def _meta_learner(width: int):
    return MetaLearner(variables=_random_variables(width, (16, 16, 1), 0), mean=jnp.asarray([0.5]),
                       std=jnp.asarray([0.3]), module=models.build_backbone("conv4", 5, width))


def test_average_is_the_teacher_parameter_mean_with_a_fresh_head():
    """θ = the numpy mean of the 5 width-8 teachers (two groups: 16 and 20 px inputs), head = the
    run's initial head; the width-16 teacher is left out."""
    zoo = _fake_zoo([(8, 16, 3), (8, 20, 2), (16, 16, 1)])
    initial = _meta_learner(8)
    averaged = methods.average_meta_learner(zoo, initial, "conv4", 8)
    width8 = [jax.tree_util.tree_map(np.asarray, zoo.group(name).variables["params"])
              for name in zoo.group_names[:2]]
    for layer, value in averaged.params.items():
        if layer == "Dense_0":                                       # the head: the run's initial one
            for leaf, initial_leaf in zip(jax.tree_util.tree_leaves(value),
                                          jax.tree_util.tree_leaves(initial.params[layer])):
                np.testing.assert_array_equal(leaf, initial_leaf)
            continue
        for path, leaf in jax.tree_util.tree_leaves_with_path(value):
            teachers = np.concatenate([_leaf_at(group[layer], path) for group in width8])   # (5, ...)
            assert teachers.shape[0] == 5
            np.testing.assert_allclose(np.asarray(leaf), teachers.mean(axis=0), rtol=1e-6, atol=1e-7)
    assert set(averaged.params) == set(initial.params)
    with pytest.raises(ValueError, match=r"architecture conv4 width 32, the zoo has conv4 width 8, conv4 width 16: "
                                         r"set --config\.meta_arch and --config\.meta_width"):
        methods.average_meta_learner(zoo, _meta_learner(32), "conv4", 32)


def _leaf_at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return np.asarray(tree)


# ----------------------------------------------------------------------------- end to end
def _metrics_by_step(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line for line in lines if "val_accuracy" not in line}


def _check_results(results, workdir, method, data_free=True):
    assert results["method"] == method and results["data_free"] is data_free
    assert results["test"] and all(0.0 <= v["free"][0] <= 100.0 and 0.0 <= v["random_init"][0] <= 100.0
                                   for v in results["test"].values())
    markdown = (workdir / "results.md").read_text()
    assert f"Method: {method}" in markdown and "random init" in markdown
    assert ("NOT data-free" in markdown) is (not data_free)
    return markdown


@pytest.mark.slow
def test_every_method_and_objective_runs_end_to_end(glyph_smoke_run, tmp_path):
    """On the zoo of the shared glyph smoke run (method free, BELL): fresh_generator (replay only),
    pixel (alignment only), oracle_maml, average and random through ``loop.run`` (the binary's
    flags: the parse test above). Per-teacher recoveries idle through the warm-up iteration; the
    objective decides which phases run; untrained methods write no metrics."""
    free_run, free_results, _ = glyph_smoke_run
    zoo_path = free_run / "zoo"
    quiet = dict(log=lambda *_: None)
    markdown = _check_results(free_results, free_run, "free")
    assert "FIVE meta-generator, k = 1 steps per teacher" in markdown and "BELL (alignment + replay)" in markdown

    run = tmp_path / "fresh"
    results = loop.run(smoke_config("fresh_generator", zoo_path, meta_objective="replay"), run, **quiet)
    markdown = _check_results(results, run, "fresh_generator")
    assert "a fresh generator per teacher, 2 steps" in markdown and "replay only" in markdown
    steps = _metrics_by_step(run)
    assert set(steps[0]) == {"step"}                                                  # idle warm-up
    assert {"inv_teacher_acc", "replay_accuracy"} <= set(steps[1]) and "kd_loss" not in steps[1]
    assert set(results["phase_seconds"]) == {"recovery", "replay", "evaluation"}

    run = tmp_path / "pixel"
    results = loop.run(smoke_config("pixel", zoo_path, meta_objective="align"), run, **quiet)
    _check_results(results, run, "pixel")
    steps = _metrics_by_step(run)
    assert {"inv_teacher_acc", "kd_loss"} <= set(steps[1]) and "replay_accuracy" not in steps[1]

    run = tmp_path / "oracle"
    results = loop.run(smoke_config("oracle_maml", zoo_path), run, **quiet)
    _check_results(results, run, "oracle_maml", data_free=False)
    assert results["meta_objective"] == "replay"                       # the oracle's, whatever the setting
    steps = _metrics_by_step(run)
    assert set(steps[0]) == {"step"} and "replay_accuracy" in steps[1]
    assert not any(name.startswith(("inv_", "kd_")) for name in steps[1])

    run = tmp_path / "average"
    with pytest.raises(ValueError, match="set --config.meta_arch and --config.meta_width"):
        loop.run(smoke_config("average", zoo_path), run, **quiet)          # the smoke zoo's teachers are width 8
    results = loop.run(smoke_config("average", zoo_path, meta_width=8), run, **quiet)
    assert "Not trained" in _check_results(results, run, "average") and not (run / "metrics.jsonl").exists()

    run = tmp_path / "random"
    results = loop.run(smoke_config("random", zoo_path), run, **quiet)
    assert "the meta-learner as initialised, untrained" in _check_results(results, run, "random")


@pytest.mark.slow
def test_oracle_bank_holds_every_real_meta_train_image_under_its_global_class():
    config = smoke_config("oracle_maml", "unused")
    bank = methods.real_task_bank(config)
    split = data_lib.load_split("glyphs", "train", **evaldata.data_options(config, "glyphs"))
    counts = np.bincount(split.labels, minlength=split.num_classes)
    np.testing.assert_array_equal(np.asarray(bank.counts), counts)
    assert bank.capacity == counts.max()
    for label in (0, split.num_classes - 1):
        stored = np.asarray(bank.images[label, :counts[label]])
        np.testing.assert_array_equal(stored, split.images[split.labels == label])
