"""FREE on MiniImageNet, single domain / single architecture (docs/algorithm.md §3 scenario SS).

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

Settings (docs/algorithm.md §2-3): zoo of 100 Conv4-64 teachers (5 classes each, 60 epochs, Adam lr
0.01), Conv4-32 meta-learner and generator at 84 px, 1000 iterations (warm-up 20), 4 teachers per
iteration, k = 5 generator steps, 20 images per class, 10 replay meta-batches of 10 tasks; meta-val
every 20 iterations on 600 fixed episodes; meta-test of the selected meta-learner on 600 episodes.
The memory bank holds 64 classes × 400 images × 84×84×3 uint8 ≈ 0.5 GB.

Runtime (estimated, not measured): a few hours on one modern GPU (84 px is ≈ 7× the pixels of
CIFAR-FS); several days on a 2-core CPU.

Expected: paper (docs/algorithm.md §7, third-party index, unverified) 5-way 5-shot 45.45 %; no
1-shot figure is quoted in docs/algorithm.md §7.
"""
from free_jax.training.config import parse_options, scenario_config, shrink_for_smoke

_OPTIONS = ("1shot", "5shot", "smoke")


def get_config(arg: str = ""):
    options = parse_options(arg, _OPTIONS)
    c = scenario_config(("miniimagenet",), 84, options)
    if "smoke" in options:
        shrink_for_smoke(c)
    return c
