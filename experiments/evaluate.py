"""Evaluates a saved FREE meta-learner on any split, shots and number of episodes.

  python experiments/evaluate.py --config=experiments/configs/glyphs.py --workdir=runs/glyphs \
      --split=test --shots=1,5 --episodes=600 --which=best --baseline

--config must be the configuration the run in --workdir was trained with (same ':options' and
--config.* overrides). Restores the meta-learner selected on meta-validation (--which=best) or
the newest training state (--which=latest), adapts it to fixed episodes of --split (10 SGD steps
by default, config.eval) and prints mean accuracy ± 95 % CI per domain and, for multi-domain runs,
the mean over domains; --baseline adds the random-init meta-learner on the same episodes.
"""
from absl import app, flags
from ml_collections import config_flags

from free_jax.compilation_cache import enable_compilation_cache
from free_jax.host_memory import release_after_compiles
from free_jax.training.evaluate_saved import WHICH, evaluate_saved
from free_jax.training.quiet import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/glyphs.py",
    "The run's config file (get_config(arg) -> ConfigDict), with the same ':options' it was trained with.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The --workdir of the FREE run to evaluate.", required=True)
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "val", "test"], "Classes to evaluate on (meta-split).")
_SHOTS = flags.DEFINE_list("shots", [], "K of the N-way K-shot episodes, e.g. 1,5 (default: config.eval.test_shots).")
_EPISODES = flags.DEFINE_integer("episodes", 0, "Episodes per shot and domain (default: config.eval.test_episodes).")
_WHICH = flags.DEFINE_enum("which", "best", list(WHICH), "best: selected on meta-validation; latest: newest state.")
_BASELINE = flags.DEFINE_bool("baseline", False, "Also score a random-init meta-learner on the same episodes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    enable_compilation_cache()
    release_after_compiles()   # the compiler's leftovers go back to the OS before each run
    config = _CONFIG.value
    try:
        shots = tuple(int(s) for s in _SHOTS.value) or tuple(config.eval.test_shots)
    except ValueError as error:
        raise app.UsageError(f"--shots must be integers, got {_SHOTS.value}") from error
    if _EPISODES.value < 0 or any(s < 1 for s in shots):
        raise app.UsageError("--episodes must be >= 0 and --shots >= 1")
    result = evaluate_saved(config, _WORKDIR.value, split=_SPLIT.value, shots=shots,
                            episodes=_EPISODES.value or config.eval.test_episodes, which=_WHICH.value,
                            baseline=_BASELINE.value)
    print(result.table(config.way), end="")


if __name__ == "__main__":
    app.run(main)
