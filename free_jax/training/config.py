"""The FREE run configuration (the defaults of docs/algorithm.md §3) and its conversion to the jitted step's config."""
from __future__ import annotations

import ml_collections

from free_jax.inversion import InversionConfig
from free_jax.meta.alignment import ALIGN_OPTIMIZERS
from free_jax.meta.replay import ReplayConfig
from free_jax.training.step import StepConfig
from free_jax.zoo import default_config as zoo_default_config


def base_config() -> ml_collections.ConfigDict:
    """Every knob of a FREE run with the defaults of docs/algorithm.md §2-3 (CIFAR-FS-sized settings)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.datasets = ("glyphs",)            # several = multi-domain (MD)
    c.data_dir = ""
    c.data_options = ml_collections.ConfigDict({"image_size": 32, "channels": 3})  # glyph sets only
    c.image_size = 32                   # meta-learner / generator resolution (MD: common size)
    c.way, c.shot, c.query = 5, 1, 15   # replay tasks (N-way K-shot, Q queries)
    c.iterations = 1000
    c.warmup = 20
    c.teachers_per_iteration = 4

    c.zoo = zoo_default_config()        # pre-trained if absent (free_jax.zoo.build_or_load_zoo)
    c.zoo_path = ""                     # "" = <workdir>/zoo

    c.meta_arch, c.meta_width = "conv4", 32
    c.outer_lr = 1e-3                   # persistent Adam on θ
    c.align_lr = 1e-3                   # inner optimiser of the alignment copy θ̃
    c.align_optimizer = "adam"          # "adam" (the released code's) or "sgd" (the Reptile/Fish analysis)
    c.beta_align = 67.0
    c.tau = 1.0

    c.inversion = ml_collections.ConfigDict(dict(
        images_per_class=20, nz=256, ngf=64, k=5, gen_lr=1e-3, z_lr=1e-3, lambda_adv=1.0, lambda_bn=0.0,
        adv_through_meta_learner=True, meta_update="fomaml", meta_lr=1e-3, crop_padding=4, flip=True))
    c.replay = ml_collections.ConfigDict(dict(
        tasks_per_batch=10, batches=10, patience=0, inner_steps=5, inner_lr=0.01, first_order=False))
    c.bank_capacity, c.bank_dtype = 400, "uint8"
    c.strategy = "auto"                 # per-teacher / per-task mapping (free_jax.vectorize)
    c.num_devices = 0                   # devices of the 'tasks' mesh (free_jax.sharding): 0 = all, 1 = one
    c.scale_with_devices = False        # weak scaling: teachers_per_iteration, tasks_per_batch × devices
    c.self_check = True                 # on accelerators: stop if the jitted meta-gradient ≠ eager (meta/selfcheck.py)

    c.eval = ml_collections.ConfigDict(dict(
        every=20, val_episodes=600, test_episodes=600, test_shots=(1, 5), query=15, steps=10, lr=0.01,
        seed=0, chunk_size=0))
    c.checkpoint_every, c.keep_checkpoints = 20, 2
    c.grid_every = 100                  # PNG grid of recovered images (0 = never)
    c.log_every = 1
    return c


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
    inversion = InversionConfig(
        way=config.way, images_per_class=inv.images_per_class, nz=inv.nz, ngf=inv.ngf, k=inv.k,
        gen_lr=inv.gen_lr, z_lr=inv.z_lr, lambda_adv=inv.lambda_adv, lambda_bn=inv.lambda_bn,
        adv_through_meta_learner=inv.adv_through_meta_learner, meta_update=inv.meta_update,
        meta_lr=inv.meta_lr, strategy=config.strategy, crop_padding=inv.crop_padding, flip=inv.flip)
    rep = config.replay
    replay = ReplayConfig(way=config.way, shot=config.shot, query=config.query,
                          tasks_per_batch=rep.tasks_per_batch, batches=rep.batches, patience=rep.patience,
                          inner_steps=rep.inner_steps, inner_lr=rep.inner_lr, first_order=rep.first_order,
                          strategy=config.strategy)
    return StepConfig(inversion=inversion, replay=replay, outer_lr=config.outer_lr, align_lr=config.align_lr,
                      align_optimizer=config.align_optimizer, beta_align=config.beta_align, tau=config.tau)


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
    c.data_options = {"image_size": 28, "channels": 1}
    c.image_size = 28
    c.inversion.flip = c.zoo.flip = False         # mirrored characters are other characters
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.batch_size = num_teachers, 20, 32, 64
    c.iterations, c.warmup, c.teachers_per_iteration = 60, 5, 4
    c.inversion.update(images_per_class=20, nz=64, ngf=32, k=5)
    c.replay.update(tasks_per_batch=4, batches=10)
    c.eval.update(every=20, val_episodes=100, test_episodes=600)
    c.checkpoint_every, c.grid_every = 20, 60


def shrink_for_smoke(c, *, num_teachers: int = 3, iterations: int = 3, teachers_per_iteration: int = 2) -> None:
    """A seconds-to-minutes plumbing run: width-8 teachers trained 1 epoch, a tiny generator and
    replay, 4 evaluation episodes, a checkpoint and meta-validation every iteration."""
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.save_every = num_teachers, 1, 8, num_teachers
    c.iterations, c.warmup, c.teachers_per_iteration = iterations, 1, teachers_per_iteration
    c.query = 3
    c.inversion.update(images_per_class=4 if c.shot == 1 else 8, nz=16, ngf=8, k=2)
    c.replay.update(tasks_per_batch=2, batches=2, inner_steps=2)
    c.eval.update(every=1, val_episodes=4, test_episodes=4, query=3, steps=2)
    c.checkpoint_every, c.grid_every, c.bank_capacity = 1, 2, 20
