"""FREE in the multi-architecture scenario (docs/algorithm.md §3 MA): Conv4, ResNet-10 and ResNet-18 teachers.

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

Settings (docs/algorithm.md §2-3): a zoo of 100 teachers spread evenly over Conv4-64 (Adam lr 0.01),
ResNet-10 and ResNet-18 (base width 64, SGD lr 0.01, momentum 0.9, wd 5e-4): 34/33/33, each on 5
random meta-train classes, 60 epochs. Each iteration draws 4 teachers with replacement across
architectures; each drawn teacher runs its own architecture's code, in one program for every
mix (free_jax/zoo/slots.py); every teacher keeps its own weights (docs/algorithm.md §6.3).
Conv4-32 meta-learner, 1000 iterations (warm-up 20), meta-val every 20 on 600 episodes,
meta-test on 600.

Runtime (estimated, not measured): a few hours on one modern GPU (the ResNet-18 teachers dominate
pre-training and recovery); days on a 2-core CPU. The ``glyphs`` variant (28 px, 21 teachers of
width 32) takes tens of minutes on 2 CPU cores; ``glyphs,smoke`` about 5 CPU-minutes (mostly XLA
compiles of the ResNets; about 10 minutes of wall time on a loaded 2-core machine).

Expected: docs/algorithm.md §7 quotes no MA figure (the paper reports gains of 1.42-4.78 points over
the prior state of the art in the MA scenario). No reference figure exists for the glyph variant.
"""
from free_jax.training.config import parse_options, scenario_config, shrink_for_smoke, use_glyph_cpu_demo

_OPTIONS = ("1shot", "5shot", "smoke", "glyphs", "miniimagenet", "cub")
_ARCHS = ("conv4", "resnet10", "resnet18")


def get_config(arg: str = ""):
    options = parse_options(arg, _OPTIONS)
    if len(options & {"glyphs", "miniimagenet", "cub"}) > 1:
        raise ValueError("choose at most one domain among glyphs, miniimagenet, cub (default: CIFAR-FS)")
    dataset, size = (("miniimagenet", 84) if "miniimagenet" in options
                     else ("cub", 84) if "cub" in options else ("cifar_fs", 32))
    c = scenario_config((dataset,), size, options, archs=_ARCHS)
    if "glyphs" in options:
        use_glyph_cpu_demo(c, num_teachers=21)     # 7 teachers of each architecture
    if "smoke" in options:
        # Two iterations (warm-up + one); one program serves every mix of architectures a draw
        # makes (free_jax/zoo/slots.py); ResNet compiles dominate on CPU.
        shrink_for_smoke(c, num_teachers=3, iterations=2, teachers_per_iteration=3)
        if "glyphs" in options:
            c.data_options.update(image_size=16, channels=1)
            c.image_size = 16
    return c
