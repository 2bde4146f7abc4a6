"""Run outputs: a JSON-lines metrics file, TensorBoard summaries, and a progress line."""
from __future__ import annotations

import json
import math
import sys
import time
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


class Progress:
    """One updating line: ``[free] step i/n | it/s | ETA | key metrics``."""

    def __init__(self, total: int, start: int, stream=sys.stderr):
        self.total, self.start_step, self.stream = total, start, stream
        self.start = time.perf_counter()

    def update(self, step: int, text: str) -> None:
        done = step - self.start_step
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.nan
        eta_text = "?" if math.isnan(eta) else f"{int(eta) // 60}:{int(eta) % 60:02d}"
        self.stream.write(f"\r[free] iteration {step}/{self.total} | {rate:.2f} it/s | ETA {eta_text} | {text}   ")
        self.stream.flush()

    def newline(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
