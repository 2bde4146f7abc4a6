"""Checks a FREE run configuration before any work, so a bad value fails in a second, not after minutes.

Each check raises ``ValueError`` naming the setting (as the ``--config.`` flag spells it), the
value and the range it must lie in. Checks that need the data (e.g. queries per class against
the images a class holds) stay where the data is loaded.
"""
from __future__ import annotations

from free_jax import vectorize
from free_jax.inversion.config import KERNEL_GRADIENT_SETTINGS
from free_jax.meta.maml import INNER_LOOPS
from free_jax.training.methods import META_OBJECTIVES, METHODS
from free_jax.training.step import ITERATION_PROGRAMS

_BANK_DTYPES = ("uint8", "bfloat16", "float32")


def _require(ok: bool, name: str, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"--config.{name}={value!r} is invalid: it must be {rule}.")


def _int_at_least(config, name: str, minimum: int) -> None:
    value = config
    for part in name.split("."):
        value = value[part]
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum, name, value,
             f"an integer ≥ {minimum}")


def _positive(config, name: str) -> None:
    value = config
    for part in name.split("."):
        value = value[part]
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, name, value,
             "a number > 0")


def _at_least_zero(config, name: str) -> None:
    value = config
    for part in name.split("."):
        value = value[part]
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, name, value,
             "a number ≥ 0 (0 switches the term off)")


def validate_config(config) -> None:
    """Raises ValueError naming the first setting of ``config`` (a FREE run ConfigDict) out of range."""
    _require(config.method in METHODS, "method", config.method, f"one of {tuple(METHODS)}")
    _require(config.meta_objective in META_OBJECTIVES, "meta_objective", config.meta_objective,
             f"one of {META_OBJECTIVES} (BELL = alignment + replay, or one of the two)")
    if METHODS[config.method].real_tasks:
        _require(config.meta_objective != "align", "meta_objective", config.meta_objective,
                 "'bell' or 'replay' with --config.method=oracle_maml (the oracle trains by MAML replay on real "
                 "tasks; it has no recovered images to align on)")
    if config.method == "average":
        _require(config.meta_arch in tuple(config.zoo.archs), "meta_arch", config.meta_arch,
                 f"an architecture of the zoo {tuple(config.zoo.archs)} with --config.method=average (θ is the "
                 "mean of the teachers of the meta-learner's architecture)")
    for name in ("iterations", "shot", "query", "teachers_per_iteration", "image_size", "meta_width",
                 "bank_capacity", "checkpoint_every", "keep_checkpoints", "log_every",
                 "eval.every", "eval.val_episodes", "eval.test_episodes", "eval.query",
                 "inversion.images_per_class", "inversion.k", "inversion.nz", "inversion.ngf",
                 "replay.tasks_per_batch", "replay.batches", "replay.inner_steps", "zoo.num_teachers",
                 "inversion.fresh_steps", "inversion.pixel_steps"):
        _int_at_least(config, name, 1)
    for name in ("warmup", "grid_every", "eval.steps", "replay.patience", "eval.chunk_size"):
        _int_at_least(config, name, 0)
    _int_at_least(config, "way", 2)
    for name in ("outer_lr", "align_lr", "eval.lr", "replay.inner_lr", "inversion.gen_lr", "inversion.meta_lr",
                 "inversion.fresh_lr", "inversion.pixel_lr"):
        _positive(config, name)
    for name in ("inversion.lambda_adv", "inversion.lambda_bn", "inversion.pixel_lambda_tv",
                 "inversion.pixel_lambda_l2", "inversion.pixel_lambda_bn"):
        _at_least_zero(config, name)
    _require(len(config.datasets) >= 1, "datasets", config.datasets, "at least one dataset name")
    for name in ("datasets", "zoo.archs"):
        values = config.zoo.archs if name == "zoo.archs" else config.datasets
        _require(not any("," in value for value in values), name, tuple(values),
                 f"a tuple of names, e.g. --config.{name}=\"('a','b')\" (a comma-joined string is one name)")
    shots = tuple(config.eval.test_shots)
    _require(len(shots) >= 1 and all(isinstance(s, int) and s >= 1 for s in shots), "eval.test_shots", shots,
             "one or more integers ≥ 1")
    pairs = len(config.datasets) * len(config.zoo.archs)  # the zoo is built on the run's datasets
    _require(config.zoo.num_teachers >= pairs, "zoo.num_teachers", config.zoo.num_teachers,
             f"at least one teacher per (dataset, architecture) pair, i.e. ≥ {pairs}")
    _require(config.bank_dtype in _BANK_DTYPES, "bank_dtype", config.bank_dtype, f"one of {_BANK_DTYPES}")
    _require(config.replay.inner_loop in INNER_LOOPS, "replay.inner_loop", config.replay.inner_loop,
             f"one of {INNER_LOOPS} ('scan': a smaller program, faster to compile)")
    _require(config.eval.inner_loop in INNER_LOOPS, "eval.inner_loop", config.eval.inner_loop,
             f"one of {INNER_LOOPS} ('scan': faster to compile, 'unroll': faster per episode)")
    _require(config.inversion.kernel_gradient in KERNEL_GRADIENT_SETTINGS, "inversion.kernel_gradient",
             config.inversion.kernel_gradient, f"one of {KERNEL_GRADIENT_SETTINGS} ('auto' unless measuring)")
    _require(config.inversion.teachers_in_flight >= 0, "inversion.teachers_in_flight",
             config.inversion.teachers_in_flight,
             "an integer ≥ 0 (0 = every teacher at once; 4, the default; fewer use less memory)")
    _require(config.iteration in ITERATION_PROGRAMS, "iteration", config.iteration, f"one of {ITERATION_PROGRAMS}")
    _require(config.strategy in vectorize.STRATEGIES, "strategy", config.strategy, f"one of {vectorize.STRATEGIES}")
    if config.inversion.images_per_class < config.shot + config.query:
        raise ValueError(f"--config.inversion.images_per_class={config.inversion.images_per_class} is smaller than "
                         f"shot + query = {config.shot + config.query}: one teacher's images could never form a "
                         "replay task. Raise images_per_class or lower query.")
