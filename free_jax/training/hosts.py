"""What a training run does differently on processes other than 0 of a multi-process run.

Process 0 (the only process of a single-process run) writes everything: the log, the progress
line, metrics.jsonl and TensorBoard, results, PNG grids; it also holds the workdir lock. The
others run the same computations (every jitted program spans all processes' devices) silently.
"""
from __future__ import annotations

import contextlib
import os

from free_jax import distributed
from free_jax.training.logging import MetricsWriter
from free_jax.training.workdir import workdir_lock


class _NoWriter:
    def write(self, step, metrics) -> None:
        del step, metrics

    def close(self) -> None:
        pass


def log_function(log):
    """``log`` on process 0, a no-op elsewhere."""
    return log if distributed.is_primary() else (lambda *args, **kwargs: None)


def lock(workdir):
    """The workdir lock on process 0 (the others share its workdir: they must not take it)."""
    return workdir_lock(workdir) if distributed.is_primary() else contextlib.nullcontext()


def metrics_writer(workdir, resume_step: int):
    return MetricsWriter(workdir, resume_step) if distributed.is_primary() else _NoWriter()


def progress_stream():
    """None (stderr) on process 0; an open null device elsewhere (for ``ProgressLine(stream=)``)."""
    return None if distributed.is_primary() else open(os.devnull, "w")
