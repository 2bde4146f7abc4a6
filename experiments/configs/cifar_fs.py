"""FREE on CIFAR-FS, single domain / single architecture (SPEC §3 scenario SS).

  python experiments/train_free.py --config=experiments/configs/cifar_fs.py \
      --config.data_dir=DATA --workdir=runs/cifar_fs_1shot
  python experiments/train_free.py --config=experiments/configs/cifar_fs.py:5shot \
      --config.data_dir=DATA --workdir=runs/cifar_fs_5shot

Options after ':' (comma-separated): ``1shot`` (default) or ``5shot`` (replay tasks, meta-val
and meta-test shots), ``smoke`` (short plumbing run: 3 Conv4-8 teachers, 1 epoch, 3
iterations, 4 evaluation episodes; its accuracy means nothing).

Data: CIFAR-FS is built from CIFAR-100 (Bertinetto et al. 2019 split, 64/16/20 classes,
32×32×3). Put CIFAR-100's ``cifar-100-python.tar.gz`` (or the extracted ``cifar-100-python/``
folder, or a prepared TFDS ``cifar100``) in DATA and pass ``--config.data_dir=DATA``; see
docs/data.md. Nothing is downloaded.

Settings (SPEC §2-3): zoo of 100 Conv4-64 teachers (5 classes each, 60 epochs, Adam lr 0.01),
Conv4-32 meta-learner at 32 px, 1000 iterations (warm-up 20), 4 teachers per iteration, k = 5
generator steps, 20 images per class, 10 replay meta-batches of 10 tasks; meta-val every 20
iterations on 600 fixed episodes; meta-test of the selected meta-learner on 600 episodes.

Runtime (estimated, not measured): about an hour on one modern GPU (zoo pre-training included);
on a 2-core CPU about a day (≈ 50 s per iteration, ≈ 2 min per teacher, see
../shared/MEASUREMENTS.md).

Expected: paper (SPEC §7, third-party index, unverified) 5-way 1-shot 39.13–39.63 %; no 5-shot
figure is quoted in SPEC §7.
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
    c.datasets = ("cifar_fs",)
    c.image_size = 32
    c.zoo.archs = ("conv4",)
    c.zoo.num_teachers, c.zoo.epochs = 100, 60
    c.iterations, c.warmup, c.teachers_per_iteration = 1000, 20, 4
    c.eval.update(every=20, val_episodes=600, test_episodes=600)
    c.shot = 5 if "5shot" in options else 1
    c.eval.test_shots = (c.shot,)
    if "smoke" in options:
        _shrink_for_smoke(c)
    return c
