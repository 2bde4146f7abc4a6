"""Pre-trains a model zoo (or resumes / loads it) and prints held-out accuracy per architecture.

  python experiments/pretrain_zoo.py --output_dir=/tmp/zoo --num_teachers=20 --epochs=10 \
      --dataset=glyphs --image_size=28 --channels=1 --width=32

Multi-architecture: --archs=conv4,resnet10,resnet18. Multi-domain: --dataset=glyphs,glyphs_outline
(global class ids made disjoint per dataset). Rerunning with the same flags resumes an
interrupted run from its last save and loads a complete zoo; other flags are a clear error.
Defaults follow docs/algorithm.md §3 (5-way, 60 epochs, batch 128, Conv4 width 64).
"""
import time

from absl import app, flags, logging

from free_jax.zoo import build, pretrain

_DATASET = flags.DEFINE_list("dataset", ["glyphs"], "Dataset(s); several make a multi-domain zoo.")
_ARCHS = flags.DEFINE_list("archs", ["conv4"], "Architecture(s): conv4, resnet10, resnet18.")
_NUM = flags.DEFINE_integer("num_teachers", 100, "Teachers in total, spread over (dataset, arch) pairs.")
_WAY = flags.DEFINE_integer("way", 5, "Classes per teacher.")
_EPOCHS = flags.DEFINE_integer("epochs", 60, "Training epochs per teacher.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random draw.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Zoo directory (created, resumed or loaded).", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Dataset root ('' = each loader's default).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Glyph image side in pixels.")
_CHANNELS = flags.DEFINE_integer("channels", 3, "Glyph channels (1 or 3).")
_RENDERINGS = flags.DEFINE_integer("renderings_per_class", 0, "Glyph images per class (0 = default 60).")
_WIDTH = flags.DEFINE_integer("width", 0, "Teacher channel width (0 = 64, the paper's).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Per-teacher batch size.")
_CROP = flags.DEFINE_integer("crop_padding", 0, "Random-crop augmentation padding (0 = off).")
_FLIP = flags.DEFINE_bool("flip", False, "Horizontal-flip augmentation (leave off for glyphs).")
_STRATEGY = flags.DEFINE_enum("strategy", "auto", ["auto", "vmap", "loop", "lax_map"],
                              "Vectorisation over teachers.")
_CHUNK = flags.DEFINE_integer("chunk_size", 0, "Teachers per compiled program (0 = backend default).")
_SAVE_EVERY = flags.DEFINE_integer("save_every", 20, "Teachers trained between two saves (resume points).")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep Orbax's info lines out of the progress line
    config = build.default_config()
    config.update(datasets=tuple(_DATASET.value), archs=tuple(_ARCHS.value), num_teachers=_NUM.value,
                  way=_WAY.value, epochs=_EPOCHS.value, seed=_SEED.value, width=_WIDTH.value,
                  batch_size=_BATCH.value, crop_padding=_CROP.value, flip=_FLIP.value,
                  data_dir=_DATA_DIR.value, strategy=_STRATEGY.value, chunk_size=_CHUNK.value,
                  save_every=_SAVE_EVERY.value)
    config.data_options.update(image_size=_IMAGE_SIZE.value, channels=_CHANNELS.value)
    if _RENDERINGS.value:
        config.data_options.renderings_per_class = _RENDERINGS.value
    for arch in config.archs:
        print(f"[zoo] {arch}: {pretrain.default_optimizer(arch)}, width {config.width or pretrain.default_width(arch)}")
    start = time.perf_counter()
    zoo = build.build_or_load_zoo(_OUTPUT.value, config)
    print(f"[zoo] {len(zoo)} teachers in {_OUTPUT.value} ({time.perf_counter() - start:.1f} s)")
    print(build.summarize(zoo))


if __name__ == "__main__":
    app.run(main)
