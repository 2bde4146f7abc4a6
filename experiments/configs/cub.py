"""FREE on CUB-200-2011, single domain / single architecture (docs/algorithm.md §3 scenario SS).

  python experiments/train_free.py --config=experiments/configs/cub.py \
      --config.data_dir=DATA --workdir=runs/cub_1shot
  python experiments/train_free.py --config=experiments/configs/cub.py:5shot \
      --config.data_dir=DATA --workdir=runs/cub_5shot

Options after ':' (comma-separated): ``1shot`` (default) or ``5shot`` (replay tasks, meta-val
and meta-test shots), ``smoke`` (short plumbing run: 3 Conv4-8 teachers, 1 epoch, 3
iterations, 4 evaluation episodes; its accuracy means nothing).

Data: TFDS ``caltech_birds2011`` prepared (once, on a machine with internet, preferably as
``array_record``) in DATA, passed as ``--config.data_dir=DATA``; images are resized to 84×84×3,
split 100/50/50 classes (Chen et al. 2019); see docs/data.md.

Settings (docs/algorithm.md §2-3): zoo of 100 Conv4-64 teachers (5 classes each, 60 epochs, Adam lr
0.01), Conv4-32 meta-learner and generator at 84 px, 1000 iterations (warm-up 20), 4 teachers per
iteration, k = 5 generator steps, 20 images per class, 10 replay meta-batches of 10 tasks; meta-val
every 20 iterations on 600 fixed episodes; meta-test of the selected meta-learner on 600 episodes.
The memory bank holds 100 classes × 400 images × 84×84×3 uint8 ≈ 0.85 GB.

Runtime (estimated, not measured): a few hours on one modern GPU; several days on a 2-core CPU.

Expected: docs/algorithm.md §7 quotes no CUB figure (the paper reports CUB 1- and 5-shot gains of
1.42-4.78 points over the prior state of the art).
"""
from free_jax.training.config import parse_options, scenario_config, shrink_for_smoke

_OPTIONS = ("1shot", "5shot", "smoke")


def get_config(arg: str = ""):
    options = parse_options(arg, _OPTIONS)
    c = scenario_config(("cub",), 84, options)
    if "smoke" in options:
        shrink_for_smoke(c)
    return c
