"""FREE on CIFAR-FS, single domain / single architecture (docs/algorithm.md §3 scenario SS).

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

Settings (docs/algorithm.md §2-3): zoo of 100 Conv4-64 teachers (5 classes each, 60 epochs, Adam lr
0.01), Conv4-32 meta-learner at 32 px, 1000 iterations (warm-up 20), 4 teachers per iteration, k = 5
generator steps, 20 images per class, 10 replay meta-batches of 10 tasks; meta-val every 20
iterations on 600 fixed episodes; meta-test of the selected meta-learner on 600 episodes.

Runtime (estimated, not measured): about an hour on one modern GPU (zoo pre-training included);
on a 2-core CPU about a day (≈ 50 s per iteration, ≈ 2 min per teacher, see
docs/pytorch_reference.md).

Expected: paper (docs/algorithm.md §7, third-party index, unverified) 5-way 1-shot 39.13–39.63 %; no
5-shot figure is quoted in docs/algorithm.md §7.
"""
from free_jax.training.config import parse_options, scenario_config, shrink_for_smoke

_OPTIONS = ("1shot", "5shot", "smoke")


def get_config(arg: str = ""):
    options = parse_options(arg, _OPTIONS)
    c = scenario_config(("cifar_fs",), 32, options)
    if "smoke" in options:
        shrink_for_smoke(c)
    return c
