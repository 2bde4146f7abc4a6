"""The progress line of long work (teacher pre-training, FREE iterations, glyph rendering,
meta-testing): count, rate and ETA."""
from __future__ import annotations

import math
import sys
import time


def clock(seconds: float) -> str:
    """``h:mm:ss``, or ``?`` for an unknown (NaN or infinite) duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLine:
    """One updating line: ``[name] done/total unit | rate rate_unit/s | ETA h:mm:ss | detail``.

    The rate counts only the work done since the line was created (``done`` at creation: work
    a resumed run had finished before) or last ``restart``-ed (e.g. after an iteration that
    compiled its program), so the ETA is that of the remaining work at this pace.

    Args:
      stream: where the line goes (default: ``sys.stderr`` at creation).
      timer: seconds of a monotonic clock (default ``time.perf_counter``; tests pass a fake one).
    """

    def __init__(self, total: int, done: float = 0, *, name: str, unit: str, rate_unit: str | None = None,
                 stream=None, timer=time.perf_counter):
        self.total, self.stream, self.timer = total, stream if stream is not None else sys.stderr, timer
        self.name, self.unit, self.rate_unit = name, unit, rate_unit or unit
        self.created = timer()
        self.restart(done)

    def restart(self, done: float) -> None:
        """Measures the rate from now and ``done`` on: work before (a compiling first call) is left out."""
        self.start_done, self.start = done, self.timer()

    def elapsed(self) -> float:
        """Seconds since the line was created."""
        return self.timer() - self.created

    def eta(self, done: float) -> float:
        """Seconds left at the pace since the (re)start; NaN while no pace is known."""
        elapsed = self.timer() - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        return (self.total - done) / rate if rate > 0 else math.nan

    def update(self, done: float, detail: str = "", shown: int | None = None) -> None:
        """Rewrites the line after ``done`` units of work (fractional: units part-way done).

        Args:
          done: work finished so far, counting work done before the line was created.
          detail: text after the ETA (metrics, the current stage).
          shown: the count printed (default ``done``), e.g. whole units while ``done`` is fractional.
        """
        elapsed = self.timer() - self.start
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        shown = done if shown is None else shown
        self.stream.write(f"\r[{self.name}] {shown}/{self.total} {self.unit} | {rate:.2f} {self.rate_unit}/s | "
                          f"ETA {clock(self.eta(done))}" + (f" | {detail}" if detail else "") + "   ")
        self.stream.flush()

    def newline(self) -> None:
        """Ends the line, so that other output starts on a line of its own."""
        self.stream.write("\n")
        self.stream.flush()
