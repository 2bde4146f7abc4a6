"""The FREE run configuration (the defaults of docs/algorithm.md §3) and its conversion to the jitted step's config."""
from __future__ import annotations

import dataclasses

import ml_collections

from free_jax.inversion import InversionConfig
from free_jax.meta.alignment import ALIGN_OPTIMIZERS
from free_jax.meta.replay import ReplayConfig
from free_jax.training.methods import step_settings
from free_jax.training.step import StepConfig
from free_jax.zoo import data_options_config, default_config as zoo_default_config

# Settings of the jitted step that the run config holds once, at its top level, for every part.
_SHARED_INVERSION_FIELDS = ("way", "strategy")
_SHARED_REPLAY_FIELDS = ("way", "shot", "query", "strategy")
# Fields set from the run's devices (``free_jax.sharding.with_mesh``), not settings.
_RUNTIME_FIELDS = ("mesh",)


def _dataclass_section(cls, shared: tuple[str, ...]) -> ml_collections.ConfigDict:
    """The fields of the frozen dataclass ``cls`` (with its defaults) other than ``shared``: the
    defaults live in the dataclass only, and a field added there is a ``--config`` setting at once."""
    return ml_collections.ConfigDict({f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)
                                      if f.name not in shared + _RUNTIME_FIELDS})


def base_config() -> ml_collections.ConfigDict:
    """Every knob of a FREE run with the defaults of docs/algorithm.md §2-3 (CIFAR-FS-sized settings).

    Each setting lives in one place. ``inversion`` and ``replay`` are the fields of
    ``InversionConfig`` / ``ReplayConfig`` (defaults there); ``way``, ``shot``, ``query`` and
    ``strategy`` are shared by every part and live at the top only; the zoo's dataset, way and
    loader settings are the run's (``c.zoo`` holds only what is the zoo's own). Two pairs look alike
    but are different settings: ``query`` (queries per class of a replay task on recovered images)
    vs ``eval.query`` (of an evaluation episode on real images), and ``seed`` (the run's random
    draws) vs ``eval.seed`` (the fixed evaluation episodes, shared by runs of other seeds and
    methods so that their accuracies compare on the same episodes).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = "free"                   # free | fresh_generator | pixel | random | average | oracle_maml
    c.meta_objective = "bell"           # bell (alignment + replay) | replay | align (training/methods.py)
    c.datasets = ("glyphs",)            # several = multi-domain (MD)
    c.data_dir = ""
    c.data_options = data_options_config()  # loader options (glyphs: image_size, channels); unset = defaults
    c.image_size = 32                   # meta-learner / generator resolution (MD: common size)
    c.way, c.shot, c.query = 5, 1, 15   # replay tasks (N-way K-shot, Q queries)
    c.iterations = 1000
    c.warmup = 20
    c.teachers_per_iteration = 4

    c.zoo = zoo_default_config()        # pre-trained if absent (free_jax.zoo.build_or_load_zoo)
    for shared in ZOO_FIELDS_FROM_RUN:  # the run's settings, filled in by ``zoo_config``
        del c.zoo[shared]
    c.zoo_path = ""                     # "" = <workdir>/zoo

    c.meta_arch, c.meta_width = "conv4", 32
    c.outer_lr = 1e-3                   # persistent Adam on θ
    c.align_lr = 1e-3                   # inner optimiser of the alignment copy θ̃
    c.align_optimizer = "adam"          # "adam" (the released code's) or "sgd" (the Reptile/Fish analysis)
    c.beta_align = 67.0
    c.tau = 1.0

    # lambda_adv = 0: FREE without L_adv; lambda_bn > 0: with DeepInversion's BN-statistics loss (FIVE and
    # the fresh generator). fresh_*: method fresh_generator (S steps per teacher); pixel_*: method pixel.
    c.inversion = _dataclass_section(InversionConfig, _SHARED_INVERSION_FIELDS)   # FIVE and the baselines
    c.replay = _dataclass_section(ReplayConfig, _SHARED_REPLAY_FIELDS)            # BELL's MAML replay
    c.bank_capacity, c.bank_dtype = 400, "uint8"
    c.strategy = "auto"                 # per-teacher / per-task mapping (free_jax.vectorize)
    c.num_devices = 0                   # devices of the 'tasks' mesh (free_jax.sharding): 0 = all, 1 = one
    c.scale_with_devices = False        # weak scaling: teachers_per_iteration, tasks_per_batch × devices
    c.iteration = "auto"                # "fused": one program per iteration; "phased": one per phase, each
    #                                     timed; "auto": phased on CPU (faster there), fused on accelerators
    c.self_check = True                 # on accelerators: stop if the jitted meta-gradient ≠ eager (meta/selfcheck.py)

    c.eval = ml_collections.ConfigDict(dict(
        every=20, val_episodes=600, test_episodes=600, test_shots=(1, 5), query=15, steps=10, lr=0.01,
        seed=0, chunk_size=0,
        # the adaptation steps' loop: "unroll" runs 10-20 % faster per episode, "scan" compiles
        # 3-10x faster (BENCHMARKS.md "Evaluation: unrolled or scanned adaptation")
        inner_loop="unroll"))
    c.checkpoint_every, c.keep_checkpoints = 20, 2
    c.grid_every = 100                  # PNG grid of recovered images (0 = never)
    c.log_every = 1
    return c


# The zoo settings a FREE run takes from its own top-level settings of the same name.
ZOO_FIELDS_FROM_RUN = ("datasets", "way", "data_dir", "data_options")


def zoo_config(config) -> ml_collections.ConfigDict:
    """The zoo configuration of a run: ``config.zoo`` plus the run's datasets, way and loader settings."""
    zoo = config.zoo.copy_and_resolve_references()
    with zoo.unlocked():
        for name in ZOO_FIELDS_FROM_RUN:
            value = config[name]
            zoo[name] = tuple(value) if name == "datasets" else value
    return zoo


def step_config(config: ml_collections.ConfigDict) -> StepConfig:
    """The static, hashable configuration of the jitted iteration."""
    inv = config.inversion
    if inv.images_per_class < config.shot + config.query:
        raise ValueError(f"inversion.images_per_class={inv.images_per_class} is smaller than shot + query = "
                         f"{config.shot + config.query}: one teacher's images could never form a replay task. "
                         "Raise images_per_class or lower query.")
    if config.bank_capacity < config.shot + config.query:
        raise ValueError(f"bank_capacity={config.bank_capacity} is smaller than shot + query = "
                         f"{config.shot + config.query}: the memory bank could never hold a replay task's "
                         "images of one class. Raise bank_capacity or lower shot/query.")
    if config.align_optimizer not in ALIGN_OPTIMIZERS:
        raise ValueError(f"align_optimizer={config.align_optimizer!r}; choose one of {ALIGN_OPTIMIZERS} "
                         "(the inner optimiser of BELL's alignment copy θ̃)")
    inversion = _from_section(InversionConfig, "inversion", config.inversion,
                              way=config.way, strategy=config.strategy)
    replay = _from_section(ReplayConfig, "replay", config.replay, way=config.way, shot=config.shot,
                           query=config.query, strategy=config.strategy)
    return StepConfig(inversion=inversion, replay=replay, outer_lr=config.outer_lr, align_lr=config.align_lr,
                      align_optimizer=config.align_optimizer, beta_align=config.beta_align, tau=config.tau,
                      **step_settings(config))


def _from_section(cls, name: str, section, **shared):
    """``cls(**section, **shared)``; a field ``cls`` does not have, or one set in both, is a clear error."""
    values = dict(section.to_dict() if hasattr(section, "to_dict") else section)
    known = {f.name for f in dataclasses.fields(cls)} - set(_RUNTIME_FIELDS)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config.{name} has no setting {unknown}; its settings are {sorted(known - set(shared))}")
    both = sorted(set(values) & set(shared))
    if both:
        raise ValueError(f"--config.{name}.{both[0]} is a run-wide setting: set --config.{both[0]} instead")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
    return cls(**values, **shared)


# ------------------------------------------------------------ shared pieces of experiment configs
SHOT_OPTIONS = ("1shot", "5shot")


def parse_options(arg: str, allowed) -> set[str]:
    """The comma-separated options after ':' in ``--config=file.py:opt1,opt2``, validated."""
    options = {part.strip() for part in arg.split(",") if part.strip()}
    unknown = options - set(allowed)
    if unknown:
        raise ValueError(f"unknown config options {sorted(unknown)}; use any of {', '.join(allowed)}")
    if set(SHOT_OPTIONS) <= options:
        raise ValueError("choose one of 1shot and 5shot, not both")
    return options


def scenario_config(datasets, image_size: int, options: set[str], archs=("conv4",)) -> ml_collections.ConfigDict:
    """Full-size FREE run (docs/algorithm.md §3: zoo of 100 × 60 epochs, 1000 iterations) on
    ``datasets`` at one common ``image_size``; 5-shot replay/evaluation if "5shot" is among ``options``."""
    c = base_config()
    c.datasets, c.image_size, c.zoo.archs = tuple(datasets), image_size, tuple(archs)
    c.shot = 5 if "5shot" in options else 1
    c.eval.test_shots = (c.shot,)
    return c


def use_glyph_cpu_demo(c, datasets=("glyphs",), num_teachers: int = 20) -> None:
    """The CPU-sized glyph settings of the README demo: 28×28×1 glyphs, Conv4-32 teachers,
    small generator, 60 iterations with 10 replay meta-batches of 4 tasks, 100 val episodes.

    Replay is where the meta-learner learns to adapt at the paper's lr 0.01: at 3 meta-batches per
    iteration the demo's meta-test margin over random init was 1.5 points (1-shot), at 10 it
    was 3.4 (same zoo); a generator of ngf 16 instead of 32 recovered images the teachers
    classified far less reliably (≈0.62 vs ≈0.83) and left replay at chance."""
    c.datasets = tuple(datasets)
    c.data_options.update(image_size=28, channels=1)
    c.image_size = 28
    c.inversion.flip = c.zoo.flip = False         # mirrored characters are other characters
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.batch_size = num_teachers, 20, 32, 64
    c.iterations, c.warmup, c.teachers_per_iteration = 60, 5, 4
    c.inversion.update(images_per_class=20, nz=64, ngf=32, k=5)
    c.replay.update(tasks_per_batch=4, batches=10)
    c.eval.update(every=20, val_episodes=100, test_episodes=600)
    c.checkpoint_every, c.grid_every = 20, 60


def use_glyph_cpu_table(c) -> None:
    """The comparison table of the README's "Results" (experiments/compare.py): the demo's zoo,
    generator and replay at 16×16 glyphs (convolutions ≈ 3× cheaper than at 28×28), 20 iterations
    with meta-validation every 5 on 50 episodes, 200 meta-test episodes, 50-step per-teacher
    baselines (200 steps would make each fresh-generator row ≈ 4× longer), and scanned adaptation
    in evaluation (each row's programs compile anew: scan compiles 3-10× faster). Sized for about
    2 hours on 2 CPU cores for 6 methods × 3 seeds × 1 and 5 shots; the first sizing (40
    iterations, unrolled evaluation) measured rows of 4-15 minutes, about 6 hours in all."""
    c.data_options.update(image_size=16, channels=1)
    c.image_size = 16
    c.iterations = 20
    c.inversion.update(fresh_steps=50, pixel_steps=50)
    c.eval.update(every=5, val_episodes=50, test_episodes=200, inner_loop="scan")
    c.checkpoint_every, c.grid_every = 5, 20


def shrink_for_smoke(c, *, num_teachers: int = 3, iterations: int = 3, teachers_per_iteration: int = 2) -> None:
    """A seconds-to-minutes plumbing run: width-8 teachers trained 1 epoch, a tiny generator and
    replay, 1 FIVE step and 1 replay inner step, 2-step baseline recoveries, 4 evaluation episodes,
    a checkpoint and meta-validation every iteration.

    Sized for compilation, which is most of a smoke run's time on CPU: unrolled steps compile in
    proportion to their number, so the loops here take one or two steps (the multi-step loops are
    checked by the tests of each piece), and the zoo's epoch and the evaluation's adaptation are
    ``lax.scan`` loops, which compile faster than unrolled ones (BENCHMARKS.md, "Test suite")."""
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.save_every = num_teachers, 1, 8, num_teachers
    c.zoo.epoch_loop = "scan"
    c.iterations, c.warmup, c.teachers_per_iteration = iterations, 1, teachers_per_iteration
    c.query = 3
    c.inversion.update(images_per_class=4 if c.shot == 1 else 8, nz=16, ngf=8, k=1, fresh_steps=2, pixel_steps=2)
    c.replay.update(tasks_per_batch=2, batches=2, inner_steps=1)
    c.eval.update(every=1, val_episodes=4, test_episodes=4, query=3, steps=2, inner_loop="scan")
    c.checkpoint_every, c.grid_every, c.bank_capacity = 1, 2, 20
    # One device: a plumbing run on CPU (where tests force 4 devices, a mesh would pad 2 teachers and
    # tasks to 4); tests/test_mesh.py runs the mesh, experiments/device_check.sh on accelerators.
    c.num_devices = 1
