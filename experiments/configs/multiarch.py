"""FREE in the multi-architecture scenario (SPEC §3 MA): Conv4, ResNet-10 and ResNet-18 teachers.

  python experiments/train_free.py --config=experiments/configs/multiarch.py \
      --config.data_dir=DATA --workdir=runs/multiarch_1shot
  python experiments/train_free.py --config=experiments/configs/multiarch.py:glyphs \
      --workdir=runs/multiarch_glyphs              # offline, on the embedded glyphs

Options after ':' (comma-separated): ``1shot`` (default) or ``5shot``; ``smoke`` (short
plumbing run: one width-8 teacher per architecture, 1 epoch, warm-up + one FREE iteration,
4 episodes; its accuracy means nothing); ``glyphs`` (offline, on the embedded ``glyphs`` set, no data needed;
``glyphs,smoke`` is the tested plumbing run); ``miniimagenet`` or ``cub`` (the domain of the real
variant, default CIFAR-FS).

Data (real variant): CIFAR-FS by default (CIFAR-100's ``cifar-100-python.tar.gz`` or TFDS
``cifar100`` in DATA, passed as ``--config.data_dir=DATA``; 32 px); with ``miniimagenet`` /
``cub`` that dataset in DATA (84 px); see docs/data.md.

Settings (SPEC §2-3): a zoo of 100 teachers spread evenly over Conv4-64 (Adam lr 0.01),
ResNet-10 and ResNet-18 (base width 64, SGD lr 0.01, momentum 0.9, wd 5e-4): 34/33/33, each on 5
random meta-train classes, 60 epochs. Each iteration draws 4 teachers with replacement across
architectures; same-architecture teachers are grouped and vectorised, every teacher keeps its own
weights (SPEC §6.3). Conv4-32 meta-learner, 1000 iterations (warm-up 20), meta-val every 20 on
600 episodes, meta-test on 600.

Runtime (estimated, not measured): a few hours on one modern GPU (the ResNet-18 teachers dominate
pre-training and recovery); days on a 2-core CPU. The ``glyphs`` variant (28 px, 21 teachers of
width 32) takes tens of minutes on 2 CPU cores; ``glyphs,smoke`` about 5 CPU-minutes (mostly XLA
compiles of the ResNets; about 10 minutes of wall time on a loaded 2-core machine).

Expected: SPEC §7 quotes no MA figure (the paper reports gains of 1.42-4.78 points over the prior
state of the art in the MA scenario). No reference figure exists for the glyph variant.
"""
from free_jax.training.config import base_config

_OPTIONS = ("1shot", "5shot", "smoke", "glyphs", "miniimagenet", "cub")


def _parse(arg: str) -> set[str]:
    options = {part.strip() for part in arg.split(",") if part.strip()}
    unknown = options - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown config options {sorted(unknown)}; use any of {', '.join(_OPTIONS)}")
    if {"1shot", "5shot"} <= options:
        raise ValueError("choose one of 1shot and 5shot, not both")
    if len(options & {"glyphs", "miniimagenet", "cub"}) > 1:
        raise ValueError("choose at most one domain among glyphs, miniimagenet, cub (default: CIFAR-FS)")
    return options


def _shrink_for_smoke(c) -> None:
    """Plumbing run: one width-8 teacher per architecture, warm-up + one FREE iteration, 4 episodes.

    Two iterations, not three: each new mix of architectures among the drawn teachers compiles
    the recovery and alignment programs again (ResNet compiles dominate a CPU smoke run).
    """
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.save_every = 3, 1, 8, 3  # width: every arch
    c.iterations, c.warmup, c.teachers_per_iteration = 2, 1, 3
    c.query = 3
    c.inversion.update(images_per_class=4 if c.shot == 1 else 8, nz=16, ngf=8, k=2)
    c.replay.update(tasks_per_batch=2, batches=2, inner_steps=2)
    c.eval.update(every=1, val_episodes=4, test_episodes=4, query=3, steps=2)
    c.checkpoint_every, c.grid_every, c.bank_capacity = 1, 2, 20


def get_config(arg: str = ""):
    options = _parse(arg)
    c = base_config()
    c.datasets, c.image_size = ("cifar_fs",), 32
    if "miniimagenet" in options:
        c.datasets, c.image_size = ("miniimagenet",), 84
    if "cub" in options:
        c.datasets, c.image_size = ("cub",), 84
    c.zoo.archs = ("conv4", "resnet10", "resnet18")
    c.zoo.num_teachers, c.zoo.epochs = 100, 60
    c.iterations, c.warmup, c.teachers_per_iteration = 1000, 20, 4
    c.eval.update(every=20, val_episodes=600, test_episodes=600)
    c.shot = 5 if "5shot" in options else 1
    if "glyphs" in options:
        c.datasets = ("glyphs",)
        c.data_options = {"image_size": 28, "channels": 1}
        c.image_size = 28
        c.inversion.flip = False                   # mirrored characters are other characters
        c.zoo.flip = False
        c.zoo.num_teachers, c.zoo.epochs, c.zoo.width = 21, 15, 32
        c.iterations, c.warmup = 60, 5
        c.inversion.update(nz=64, ngf=32)
        c.replay.update(tasks_per_batch=4, batches=3)
        c.eval.update(every=20, val_episodes=100, test_episodes=600)
        c.checkpoint_every, c.grid_every = 20, 60
    c.eval.test_shots = (c.shot,)
    if "smoke" in options:
        _shrink_for_smoke(c)
        if "glyphs" in options:
            c.data_options = {"image_size": 16, "channels": 1}
            c.image_size = 16
    return c
