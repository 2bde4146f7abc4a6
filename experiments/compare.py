"""Compares data-free meta-learning methods on one zoo and one set of episodes (FREE's "better" and "faster").

  python experiments/compare.py --config=experiments/configs/glyphs.py --output=runs/compare \
      --methods=free,random --seeds=0,1,2 --shots=1,5 --cross_domains=glyphs_outline

Each row (method, seed, shot) is a run of free_jax.training.loop.run with config.method set
(random: the random-init meta-learner, nothing trained) in <output>/rows/<row>/; a K-shot row is
trained at K shots. All rows share <output>/zoo (built once) and the fixed meta-val/meta-test
episodes. Every row is scored under the paper's protocol (config.eval.steps at config.eval.lr)
and a tuned one (inner lr and steps chosen on meta-validation from --lrs × --steps, frozen for
meta-test). Writes comparison.md/.json/.csv, val_curves.png and recovery_speed.png. Rerunning the
command reuses every finished row.
"""
from absl import app, flags
from ml_collections import config_flags

from free_jax.comparison import run_comparison
from free_jax.compilation_cache import enable_compilation_cache
from free_jax.determinism import request_deterministic_gpu_ops
from free_jax.host_memory import release_after_compiles
from free_jax.training.quiet import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/glyphs.py",
    "Base run config of every row (get_config(arg) -> ConfigDict; ':5shot' etc. as the file documents); "
    "method, seed, shot and zoo_path are set per row.")
_OUTPUT = flags.DEFINE_string("output", "runs/compare", "Directory of the zoo, the rows, the tables and figures.")
_METHODS = flags.DEFINE_list("methods", ["free", "random"],
                             "Methods (config.method values; 'random' = random init, evaluated without training).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of each method's runs (config.seed).")
_SHOTS = flags.DEFINE_list("shots", ["1", "5"], "K of the rows: a K-shot row is trained and evaluated at K shots.")
_LRS = flags.DEFINE_list("lrs", ["0.01", "0.03", "0.1", "0.3"], "Tuned protocol: inner learning rates of the grid.")
_STEPS = flags.DEFINE_list("steps", ["10", "20"], "Tuned protocol: inner step counts of the grid.")
_CROSS = flags.DEFINE_list("cross_domains", ["glyphs_outline"],
                           "Datasets whose meta-test every meta-learner is also scored on (empty: none).")
_COMPAT = flags.DEFINE_bool("compat", True, "Meta-test at every evaluation during training, for the labelled "
                            "compatibility figure (the released code's best-of-meta-test selection).")
_RECOVERY = flags.DEFINE_bool("recovery_figure", True,
                              "Recovery-speed figure: FIVE of the first free row vs a fresh generator.")
_RECOVERY_TEACHERS = flags.DEFINE_integer("recovery_teachers", 3, "Zoo teachers in the recovery-speed figure.")
_RECOVERY_DRAWS = flags.DEFINE_integer("recovery_draws", 2, "Latent-code draws per teacher in that figure.")
_RECOVERY_STEPS = flags.DEFINE_integer("recovery_fresh_steps", 200, "Steps of the fresh generator in that figure.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Train and score nothing: write the tables and figures of the "
                                 "rows finished so far (e.g. while the comparison runs in another process).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    request_deterministic_gpu_ops()   # exact resume on GPUs too (before any JAX backend starts)
    quiet_library_logs()
    enable_compilation_cache()
    release_after_compiles()   # the compiler's leftovers go back to the OS before each run
    try:
        seeds, shots = [int(s) for s in _SEEDS.value], [int(s) for s in _SHOTS.value]
        lrs, steps = [float(v) for v in _LRS.value], [int(v) for v in _STEPS.value]
    except ValueError as error:
        raise app.UsageError(f"--seeds, --shots, --steps must be integers and --lrs numbers: {error}") from error
    if not (_METHODS.value and seeds and shots):
        raise app.UsageError("give at least one method, seed and shot")
    run_comparison(_CONFIG.value, _OUTPUT.value, methods=_METHODS.value, seeds=seeds, shots=shots, lrs=lrs,
                   steps=steps, cross_domains=[d for d in _CROSS.value if d], compat=_COMPAT.value,
                   recovery_figure=_RECOVERY.value, recovery_teachers=_RECOVERY_TEACHERS.value,
                   recovery_draws=_RECOVERY_DRAWS.value, recovery_fresh_steps=_RECOVERY_STEPS.value,
                   report_only=_REPORT_ONLY.value)


if __name__ == "__main__":
    app.run(main)
