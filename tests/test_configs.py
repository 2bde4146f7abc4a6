"""Experiment configs: every file loads for each option, options are validated, and the offline
multi-domain (MD) and multi-architecture (MA) smoke variants run end-to-end through the loop."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from free_jax.training import loop
from free_jax.training.config import step_config
from free_jax.zoo.store import Zoo

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
REAL = {"cifar_fs": (("cifar_fs",), 32), "miniimagenet": (("miniimagenet",), 84), "cub": (("cub",), 84),
        "multidomain": (("cifar_fs", "miniimagenet", "cub"), 84), "multiarch": (("cifar_fs",), 32)}
OPTIONS = {name: ["", "1shot", "5shot", "smoke", "5shot,smoke"] for name in REAL}
OPTIONS["multidomain"] += ["glyphs", "glyphs,5shot", "glyphs,smoke"]
OPTIONS["multiarch"] += ["glyphs", "glyphs,smoke", "miniimagenet", "cub,5shot"]
CASES = [(name, arg) for name, args in OPTIONS.items() for arg in args]


def load_config_module(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIG_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(name, arg=""):
    return load_config_module(name).get_config(arg)


@pytest.mark.parametrize("name, arg", CASES)
def test_every_config_loads_for_each_option_with_spec_defaults(name, arg):
    config = get_config(name, arg)
    options = set(arg.split(",")) - {""}
    assert config.shot == (5 if "5shot" in options else 1)
    assert tuple(config.eval.test_shots) == (config.shot,)
    step_config(config)                 # images per class can form a replay task: shot + query fit
    if "glyphs" in options:
        assert all(d.startswith("glyphs") for d in config.datasets)
    elif "miniimagenet" in options or "cub" in options:
        assert config.image_size == 84 and config.datasets == (("cub",) if "cub" in options else ("miniimagenet",))
    else:
        assert (tuple(config.datasets), config.image_size) == REAL[name]
    if name == "multiarch":
        assert tuple(config.zoo.archs) == ("conv4", "resnet10", "resnet18")
    else:
        assert tuple(config.zoo.archs) == ("conv4",)
    if "smoke" in options:              # shrunk: a handful of teachers and iterations
        assert config.iterations <= 3 and config.zoo.epochs == 1 and config.zoo.width == 8
        assert len(config.datasets) * len(config.zoo.archs) <= config.zoo.num_teachers <= 3   # every pair trained
        assert config.eval.val_episodes <= 4 and config.eval.test_episodes <= 4
    elif "glyphs" not in options:       # docs/algorithm.md §2-3 defaults
        assert (config.zoo.num_teachers, config.zoo.epochs, config.zoo.width) == (100, 60, 0)
        assert (config.iterations, config.warmup, config.teachers_per_iteration) == (1000, 20, 4)
        assert (config.eval.every, config.eval.val_episodes, config.eval.test_episodes) == (20, 600, 600)
        assert (config.inversion.k, config.inversion.images_per_class, config.replay.batches) == (5, 20, 10)


def test_multidomain_generates_at_one_common_size_and_glyph_variant_resizes_per_teacher():
    assert get_config("multidomain").image_size == 84      # native size of MiniImageNet and CUB
    for arg in ("glyphs", "glyphs,smoke"):
        config = get_config("multidomain", arg)
        assert config.datasets == ("glyphs", "glyphs_outline")
        assert config.image_size != config.data_options.image_size   # the per-teacher resize runs
        assert config.image_size % 4 == 0                            # the generator upsamples ×4


@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("bad, message", [("2shot", r"unknown config options \['2shot'\]"),
                                          ("smoke,fast", r"unknown config options \['fast'\]"),
                                          ("1shot,5shot", "not both")])
def test_unknown_or_contradictory_options_are_clear_errors(name, bad, message):
    with pytest.raises(ValueError, match=message) as error:
        get_config(name, bad)
    if "unknown" in message:
        assert "5shot" in str(error.value) and "smoke" in str(error.value)   # lists the valid ones


def test_multiarch_takes_one_domain_only():
    with pytest.raises(ValueError, match="at most one domain"):
        get_config("multiarch", "glyphs,cub")


@pytest.mark.parametrize("name", sorted(REAL))
def test_docstring_gives_command_data_runtime_and_reference(name):
    doc = load_config_module(name).__doc__
    assert f"experiments/train_free.py --config=experiments/configs/{name}.py" in doc
    assert "--config.data_dir=DATA" in doc and "Runtime" in doc and "Expected" in doc
    reference = {"cifar_fs": "39.13", "miniimagenet": "45.45", "multidomain": "31.51"}.get(name)
    if reference:
        assert reference in doc


def test_options_parse_through_the_command_line_flag(monkeypatch):
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values)
    argv = ["prog", f"--config={CONFIG_DIR / 'multiarch.py'}:glyphs,5shot", "--config.iterations=7"]
    monkeypatch.setattr("sys.argv", argv)          # config_flags reads the overrides from sys.argv
    flag_values(argv)
    config = flag_values.config
    assert (config.shot, config.iterations, config.datasets) == (5, 7, ("glyphs",))


def _check_run(workdir, config, results, domains):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "inv_ce" in line] == list(range(config.iterations))
    assert [line["step"] for line in lines if "val_accuracy" in line] == list(range(config.warmup, config.iterations))
    assert all(np.isfinite(line["replay_loss"]) for line in lines if "replay_loss" in line)
    assert sorted(results["test"]) == sorted(f"1shot/{d}" for d in domains)
    for value in results["test"].values():
        assert 0.0 <= value["free"][0] <= 100.0 and 0.0 <= value["random_init"][0] <= 100.0
    assert (workdir / "results.md").is_file() and list(workdir.glob("recovered_*.png"))


@pytest.mark.slow
def test_multidomain_glyphs_smoke_runs_end_to_end(tmp_path):
    config = get_config("multidomain", "glyphs,smoke")
    results = loop.run(config, tmp_path, log=lambda *_: None)
    _check_run(tmp_path, config, results, ["glyphs", "glyphs_outline", "mean"])
    zoo = Zoo.load(tmp_path / "zoo")
    assert sorted(s.dataset for s in zoo.specs) == ["glyphs", "glyphs_outline"]
    ids = {s.dataset: set(s.class_ids) for s in zoo.specs}
    assert max(ids["glyphs"]) < 240 <= min(ids["glyphs_outline"])   # global ids offset per domain
    free = {k: v["free"][0] for k, v in results["test"].items()}
    assert free["1shot/mean"] == pytest.approx((free["1shot/glyphs"] + free["1shot/glyphs_outline"]) / 2)


@pytest.mark.slow
def test_multiarch_glyphs_smoke_runs_end_to_end(tmp_path):
    """Two of the three architectures (Conv4 and ResNet-10): ResNet-18 is the same code with more
    blocks (tests/test_models.py checks its shapes), and its compiles would double this test's
    minutes; the scenario's mixing of architectures is what runs here."""
    config = get_config("multiarch", "glyphs,smoke")
    config.zoo.archs, config.zoo.num_teachers = ("conv4", "resnet10"), 2
    results = loop.run(config, tmp_path, log=lambda *_: None)
    _check_run(tmp_path, config, results, ["glyphs"])
    zoo = Zoo.load(tmp_path / "zoo")
    assert sorted(s.arch for s in zoo.specs) == ["conv4", "resnet10"]
    assert len(zoo.group_names) == 2                    # one vectorised group per architecture


def test_bank_capacity_below_shot_plus_query_is_rejected_up_front():
    config = get_config("cifar_fs", "smoke")
    config.bank_capacity = config.shot + config.query - 1
    with pytest.raises(ValueError, match=r"bank_capacity=3 is smaller than shot \+ query = 4.*Raise bank_capacity"):
        step_config(config)
    config.bank_capacity = config.shot + config.query
    step_config(config)


def test_alignment_optimizer_is_a_validated_setting():
    config = get_config("cifar_fs")
    assert config.align_optimizer == "adam" and step_config(config).align_optimizer == "adam"
    config.align_optimizer = "sgd"
    assert step_config(config).align_optimizer == "sgd"
    config.align_optimizer = "rmsprop"
    with pytest.raises(ValueError, match=r"align_optimizer='rmsprop'; choose one of \('adam', 'sgd'\)"):
        step_config(config)


# ------------------------------------------------------------ one config vocabulary
def test_every_inversion_and_replay_field_is_a_setting_once():
    import dataclasses

    from free_jax.inversion import InversionConfig
    from free_jax.meta.replay import ReplayConfig
    config = get_config("cifar_fs")
    # Run-wide settings live at the top; the device mesh is set from the run's devices, not a setting.
    assert set(config.inversion) == {f.name for f in dataclasses.fields(InversionConfig)} - {"way", "strategy", "mesh"}
    assert set(config.replay) == {f.name for f in dataclasses.fields(ReplayConfig)} - {"way", "shot", "query",
                                                                                          "strategy", "mesh"}
    config.inversion.fresh_steps, config.replay.inner_steps, config.query = 17, 3, 4
    step = step_config(config)
    assert (step.inversion.fresh_steps, step.replay.inner_steps, step.replay.query) == (17, 3, 4)


def test_unknown_or_run_wide_step_setting_is_a_clear_error():
    config = get_config("cifar_fs")
    config.inversion.k_steps = 3
    with pytest.raises(ValueError, match=r"--config.inversion has no setting \['k_steps'\]"):
        step_config(config)
    config = get_config("cifar_fs")
    config.replay.shot = 5
    with pytest.raises(ValueError, match=r"--config.replay.shot is a run-wide setting: set --config.shot"):
        step_config(config)


def test_zoo_takes_the_runs_datasets_way_and_loader_options_from_one_place():
    from free_jax.training.config import zoo_config
    config = get_config("multidomain", "glyphs,smoke")
    for name in ("datasets", "way", "data_dir", "data_options"):
        assert name not in config.zoo
    zoo = zoo_config(config)
    assert zoo.datasets == ("glyphs", "glyphs_outline") and zoo.way == config.way
    assert zoo.data_options.to_dict() == config.data_options.to_dict()
    assert zoo.num_teachers == config.zoo.num_teachers


def test_loader_options_reach_every_loader_that_takes_them_and_are_refused_by_one_that_does_not():
    from free_jax.data import loader_options
    options = {"image_size": 28, "channels": None, "renderings_per_class": None}
    assert loader_options("glyphs_outline", options) == {"image_size": 28}
    assert loader_options("cub", options) == {"image_size": 28}
    assert loader_options("cifar_fs", {"image_size": None}) == {}
    with pytest.raises(ValueError, match=r"dataset 'cifar_fs' takes no option \['image_size'\].*options are none"):
        loader_options("cifar_fs", options)


def test_comma_joined_dataset_names_are_refused_with_the_tuple_spelling():
    from free_jax.training.validate import validate_config
    config = get_config("multidomain", "glyphs,smoke")
    config.datasets = ("glyphs,glyphs_outline",)
    with pytest.raises(ValueError, match=r"--config.datasets=.*a tuple of names"):
        validate_config(config)
