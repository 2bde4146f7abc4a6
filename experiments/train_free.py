"""Trains FREE (data-free meta-learning) and reports meta-test accuracy.

  python experiments/train_free.py --config=experiments/configs/glyphs.py --workdir=runs/glyphs

Pre-trains the configured model zoo if absent, runs FIVE + BELL for ``config.iterations``,
selects the meta-learner on meta-validation, evaluates it on meta-test next to a random-init
baseline, and writes results.md / results.json / metrics.jsonl / TensorBoard summaries /
recovered-image PNGs to --workdir. Rerunning the same command resumes from the last checkpoint.
Override any config field on the command line, e.g. --config.iterations=200.

Devices: teachers, replay tasks and evaluation episodes are split over all visible devices
(--config.num_devices=N to use fewer, 1 for one). Several processes (hosts): start the same
command once per process with --coordinator_address=HOST:PORT --num_processes=P --process_id=I
(inside SLURM/Open MPI and similar clusters JAX reads them itself); process 0 writes the files.
"""
from absl import app, flags
from ml_collections import config_flags

from free_jax import distributed
from free_jax.compilation_cache import enable_compilation_cache
from free_jax.determinism import request_deterministic_gpu_ops
from free_jax.host_memory import release_after_compiles
from free_jax.training.loop import run
from free_jax.training.quiet import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/glyphs.py",
    "Config file (get_config(arg) -> ConfigDict); append ':smoke', ':5shot' etc. as the file documents.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/free", "Output directory; an existing run there is resumed.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's rank, 0 .. num_processes-1.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    request_deterministic_gpu_ops()   # exact resume on GPUs too (before any JAX backend starts)
    quiet_library_logs()
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    enable_compilation_cache()
    release_after_compiles()   # the compiler's leftovers go back to the OS before each run
    run(_CONFIG.value, _WORKDIR.value)
    distributed.shutdown()


if __name__ == "__main__":
    app.run(main)
