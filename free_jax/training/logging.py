"""Run outputs: a JSON-lines metrics file and TensorBoard summaries (the progress line: ``free_jax.progress``)."""
from __future__ import annotations

import json
from pathlib import Path


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` lines to metrics.jsonl and scalars to TensorBoard.

    On resume, lines of steps after the restored checkpoint are dropped first, so the file of
    an interrupted-then-resumed run equals that of an uninterrupted one.
    """

    def __init__(self, workdir: Path, resume_step: int):
        self.path = workdir / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] < resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from tensorboardX import SummaryWriter
            self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        except ImportError:  # tensorboardX is a dependency; degrade to JSON lines only.
            self._tensorboard = None

    def write(self, step: int, metrics: dict) -> None:
        with self.path.open("a") as stream:
            stream.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tensorboard is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
