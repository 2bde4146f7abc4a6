"""FREE in the multi-domain scenario (docs/algorithm.md §3 MD): a zoo mixing CIFAR-FS, MiniImageNet and CUB.

  python experiments/train_free.py --config=experiments/configs/multidomain.py \
      --config.data_dir=DATA --workdir=runs/multidomain_1shot
  python experiments/train_free.py --config=experiments/configs/multidomain.py:glyphs \
      --workdir=runs/multidomain_glyphs            # offline, on the embedded glyph domains

Options after ':' (comma-separated): ``1shot`` (default) or ``5shot``; ``smoke`` (short
plumbing run: one width-8 teacher per domain, 1 epoch, 3 iterations, 4 episodes; its accuracy means nothing);
``glyphs`` (offline MD on the two embedded domains ``glyphs`` + ``glyphs_outline``, no data
needed; ``glyphs,smoke`` is the tested plumbing run).

Data (real variant): one folder DATA holding all three datasets, passed as
``--config.data_dir=DATA``: CIFAR-100's ``cifar-100-python.tar.gz`` (or TFDS ``cifar100``), TFDS
``caltech_birds2011``, and MiniImageNet's ``images/`` + ``{train,val,test}.csv`` (or its
pickles); see docs/data.md. Global class ids are disjoint per dataset (offsets; 64 + 64 + 100
meta-train classes).

Common size: 84 px. The generator and the meta-learner work at one common size, and each
teacher sees the images resized to its own input size and normalised with its own statistics.
84 is the native size of two of the three domains (MiniImageNet, CUB), so their teachers and
their meta-test images lose nothing; only CIFAR-FS (32 px) is resampled: its teachers see
84 → 32 downsampled images (what a 32 px classifier expects) and its meta-val/test images are
upsampled 32 → 84, which adds no detail but destroys none. A common size of 32 would throw away
most of the MiniImageNet/CUB detail the meta-learner is tested on. The cost is the 84 px
generator, meta-learner and bank (228 classes × 400 × 84×84×3 uint8 ≈ 1.9 GB of device memory).

Evaluation: meta-val and meta-test report each domain (600 fixed episodes each) and their mean;
model selection uses the mean over domains.

Settings otherwise as the single-domain configs (docs/algorithm.md §2-3): 100 Conv4-64 teachers
spread evenly over the 3 datasets (34/33/33), 60 epochs, 1000 iterations (warm-up 20), 4 teachers
per iteration, meta-val every 20.

Runtime (estimated, not measured): a few hours on one modern GPU; days on a 2-core CPU. The
``glyphs`` variant (28 px data, 32 px common size, 20 teachers) takes tens of minutes on 2 CPU
cores; ``glyphs,smoke`` about 2.5 CPU-minutes (mostly XLA compiles; ~5 min wall on a loaded
2-core machine).

Expected: paper (docs/algorithm.md §7, third-party index, unverified) MD 5-way 1-shot 31.51 % (mean
over domains); no 5-shot figure is quoted in docs/algorithm.md §7. No reference figure exists for
the glyph variant.
"""
from free_jax.training.config import parse_options, scenario_config, shrink_for_smoke, use_glyph_cpu_demo

_OPTIONS = ("1shot", "5shot", "smoke", "glyphs")


def get_config(arg: str = ""):
    options = parse_options(arg, _OPTIONS)
    c = scenario_config(("cifar_fs", "miniimagenet", "cub"), 84, options)
    if "glyphs" in options:
        # Offline MD: two embedded domains (same characters, solid vs hollow-on-texture), global
        # ids disjoint per domain. The common size (32) differs from the teachers' (28), as the
        # 32 px CIFAR-FS teachers under the real config, so the per-teacher resize runs here too.
        use_glyph_cpu_demo(c, datasets=("glyphs", "glyphs_outline"))
        c.image_size = 32
    if "smoke" in options:
        shrink_for_smoke(c, num_teachers=len(c.datasets))
        if "glyphs" in options:
            c.data_options.update(image_size=16, channels=1)
            c.image_size = 20                      # ≠ 16: the per-teacher resize path runs
    return c
