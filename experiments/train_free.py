"""Trains FREE (data-free meta-learning) and reports meta-test accuracy.

  python experiments/train_free.py --config=experiments/configs/glyphs.py --workdir=runs/glyphs

Pre-trains the configured model zoo if absent, runs FIVE + BELL for ``config.iterations``,
selects the meta-learner on meta-validation, evaluates it on meta-test next to a random-init
baseline, and writes results.md / results.json / metrics.jsonl / TensorBoard summaries /
recovered-image PNGs to --workdir. Rerunning the same command resumes from the last checkpoint.
Override any config field on the command line, e.g. --config.iterations=200.
"""
from absl import app, flags
from ml_collections import config_flags

from free_jax.compilation_cache import enable_compilation_cache
from free_jax.training.loop import run
from free_jax.training.quiet import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/glyphs.py",
    "Config file (get_config(arg) -> ConfigDict); append ':smoke', ':5shot' etc. as the file documents.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/free", "Output directory; an existing run there is resumed.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    enable_compilation_cache()
    run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
