"""Pre-trains a model zoo (or resumes / loads it) and prints held-out accuracy per architecture.

  python experiments/pretrain_zoo.py --output_dir=/tmp/zoo --zoo.num_teachers=20 --zoo.epochs=10 \
      --zoo.datasets=glyphs --zoo.data_options.image_size=28 --zoo.data_options.channels=1 --zoo.width=32

Every ``--zoo.*`` setting is a field of ``free_jax.zoo.default_config()`` (the zoo section of a
FREE run's config, plus the dataset, way and loader settings a run takes from its own): the same
names, defaults and checks; an unknown name is an error. Multi-architecture:
``--zoo.archs=conv4,resnet10,resnet18``. Multi-domain: ``--zoo.datasets=glyphs,glyphs_outline``
(global class ids made disjoint per dataset). Rerunning with the same settings resumes an
interrupted run from its last save and loads a complete zoo; other settings are a clear error.
Several processes build one zoo together with ``--shared`` (the same command started once per GPU
or host), each pre-training the runs of ``--zoo.save_every`` teachers it claims first.
Defaults follow docs/algorithm.md §3 (5-way, 60 epochs, batch 128, Conv4 width 64).
"""
import time

from absl import app, flags, logging
from ml_collections import config_flags

from free_jax.compilation_cache import enable_compilation_cache
from free_jax.determinism import request_deterministic_gpu_ops
from free_jax.host_memory import release_after_compiles
from free_jax.zoo import build, pretrain

_OUTPUT = flags.DEFINE_string("output_dir", None, "Zoo directory (created, resumed or loaded).", required=True)
_ZOO = config_flags.DEFINE_config_dict("zoo", build.default_config(),
                                       "Zoo settings (free_jax.zoo.default_config), e.g. --zoo.num_teachers=20.")
_SHARED = flags.DEFINE_bool("shared", False, "Build the zoo together with other processes started with the same "
                            "command and --shared (one per GPU or host, shared filesystem): each pre-trains the "
                            "runs of --zoo.save_every teachers it claims first; the zoo is the same as one built "
                            "by one process.")


def main(argv):
    del argv
    request_deterministic_gpu_ops()   # exact resume on GPUs too (before any JAX backend starts)
    logging.set_verbosity(logging.WARNING)  # keep Orbax's info lines out of the progress line
    enable_compilation_cache()
    release_after_compiles()   # the compiler's leftovers go back to the OS before each run
    config = _ZOO.value
    # --zoo.archs=conv4,resnet10 arrives as one comma-joined name: split it.
    names = lambda values: tuple(name.strip() for value in values for name in value.split(",") if name.strip())
    config.datasets, config.archs = names(config.datasets), names(config.archs)
    for arch in config.archs:
        print(f"[zoo] {arch}: {pretrain.default_optimizer(arch)}, width {config.width or pretrain.default_width(arch)}")
    start = time.perf_counter()
    zoo = build.build_or_load_zoo(_OUTPUT.value, config, shared=_SHARED.value)
    print(f"[zoo] {len(zoo)} teachers in {_OUTPUT.value} ({time.perf_counter() - start:.1f} s)")
    print(build.summarize(zoo))


if __name__ == "__main__":
    app.run(main)
