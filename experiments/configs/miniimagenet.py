"""FREE on MiniImageNet, single domain / single architecture (SPEC §3 scenario SS).

  python experiments/train_free.py --config=experiments/configs/miniimagenet.py \
      --config.data_dir=DATA --workdir=runs/miniimagenet_1shot
  python experiments/train_free.py --config=experiments/configs/miniimagenet.py:5shot \
      --config.data_dir=DATA --workdir=runs/miniimagenet_5shot

Options after ':' (comma-separated): ``1shot`` (default) or ``5shot`` (replay tasks, meta-val
and meta-test shots), ``smoke`` (short plumbing run: 3 Conv4-8 teachers, 1 epoch, 3
iterations, 4 evaluation episodes; its accuracy means nothing).

Data: MiniImageNet (Ravi & Larochelle split, 64/16/20 classes, 84×84×3) cannot be downloaded by
code: put ``images/*.jpg`` with ``{train,val,test}.csv``, or the
``mini-imagenet-cache-{train,val,test}.pkl`` pickles, in DATA and pass
``--config.data_dir=DATA``; see docs/data.md.

Settings (SPEC §2-3): zoo of 100 Conv4-64 teachers (5 classes each, 60 epochs, Adam lr 0.01),
Conv4-32 meta-learner and generator at 84 px, 1000 iterations (warm-up 20), 4 teachers per
iteration, k = 5 generator steps, 20 images per class, 10 replay meta-batches of 10 tasks;
meta-val every 20 iterations on 600 fixed episodes; meta-test of the selected meta-learner on
600 episodes. The memory bank holds 64 classes × 400 images × 84×84×3 uint8 ≈ 0.5 GB.

Runtime (estimated, not measured): a few hours on one modern GPU (84 px is ≈ 7× the pixels of
CIFAR-FS); several days on a 2-core CPU.

Expected: paper (SPEC §7, third-party index, unverified) 5-way 5-shot 45.45 %; no 1-shot figure
is quoted in SPEC §7.
"""
from free_jax.training.config import base_config

_OPTIONS = ("1shot", "5shot", "smoke")


def _parse(arg: str) -> set[str]:
    options = {part.strip() for part in arg.split(",") if part.strip()}
    unknown = options - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown config options {sorted(unknown)}; use any of {', '.join(_OPTIONS)}")
    if {"1shot", "5shot"} <= options:
        raise ValueError("choose one of 1shot and 5shot, not both")
    return options


def _shrink_for_smoke(c) -> None:
    """Plumbing run on the real data (tiny zoo, 3 iterations, 4 episodes)."""
    c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.save_every = 3, 1, 8, 3
    c.iterations, c.warmup, c.teachers_per_iteration = 3, 1, 2
    c.query = 3
    c.inversion.update(images_per_class=4 if c.shot == 1 else 8, nz=16, ngf=8, k=2)
    c.replay.update(tasks_per_batch=2, batches=2, inner_steps=2)
    c.eval.update(every=1, val_episodes=4, test_episodes=4, query=3, steps=2)
    c.checkpoint_every, c.grid_every, c.bank_capacity = 1, 2, 20


def get_config(arg: str = ""):
    options = _parse(arg)
    c = base_config()
    c.datasets = ("miniimagenet",)
    c.image_size = 84
    c.zoo.archs = ("conv4",)
    c.zoo.num_teachers, c.zoo.epochs = 100, 60
    c.iterations, c.warmup, c.teachers_per_iteration = 1000, 20, 4
    c.eval.update(every=20, val_episodes=600, test_episodes=600)
    c.shot = 5 if "5shot" in options else 1
    c.eval.test_shots = (c.shot,)
    if "smoke" in options:
        _shrink_for_smoke(c)
    return c
