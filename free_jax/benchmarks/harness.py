"""Timing helpers shared by every benchmark suite, and the BENCHMARKS.md section writer.

Rules (developers' guide): medians over repeated runs after warm-up, compile time reported
separately, ratios measured in the same run, machine/command/date written with the figures.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from free_jax.data.base import SplitData


def block(tree):
    """Waits for every array in ``tree`` (asynchronous dispatch) and returns it."""
    return jax.block_until_ready(tree)


def synthetic_split(classes: int, per_class: int, shape, split: str) -> SplitData:
    """Random uint8 images, ``per_class`` per class (labels class-major): for timing work whose
    cost does not depend on pixel values (pre-training, evaluation)."""
    images = np.random.default_rng(0).integers(0, 256, (classes * per_class, *shape), dtype=np.uint8)
    return SplitData(images, np.repeat(np.arange(classes), per_class).astype(np.int32),
                     tuple(f"c{i}" for i in range(classes)), (0.5,) * shape[-1], (0.25,) * shape[-1],
                     "synthetic", split)


def time_compile(jitted, *args, **kwargs) -> tuple[float, Callable]:
    """Seconds to lower+compile ``jitted`` for these arguments, and the compiled callable."""
    start = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return time.perf_counter() - start, compiled


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` (results blocked on) over ``repeats`` runs after warm-up."""
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (host memory; CPU backend)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_description() -> str:
    """One line naming the backend, devices, CPU and library versions."""
    import flax
    import optax
    devices = jax.devices()
    kind = devices[0].device_kind if devices else "?"
    return (f"{jax.default_backend()} × {len(devices)} ({kind}); {platform.processor() or platform.machine()}, "
            f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
            f"optax {optax.__version__}")


def write_section(path: str | Path, suite: str, body_markdown: str) -> None:
    """Replaces (or appends) the block between ``<!-- suite:NAME -->`` markers in ``path``.

    The block is headed by the machine, the command line and the date, so every figure in
    BENCHMARKS.md says where and how it was measured. Sections are keyed by suite and backend
    so CPU and GPU figures sit side by side.
    """
    path = Path(path)
    key = f"{suite}-{jax.default_backend()}"
    start, end = f"<!-- suite:{key} -->", f"<!-- /suite:{key} -->"
    header = (f"### {suite} ({jax.default_backend()})\n\n"
              f"- machine: {machine_description()}\n"
              f"- command: `{' '.join(['python'] + sys.argv)}`\n"
              f"- date: {datetime.date.today().isoformat()}\n\n")
    block_text = f"{start}\n{header}{body_markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `experiments/benchmark.py`.\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block_text, text)
    else:
        text = text.rstrip() + "\n\n" + block_text + "\n"
    path.write_text(text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_line(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """The machine's load averages (``os.getloadavg()``) before and after a suite, as one sentence."""
    show = lambda load: "/".join(f"{value:.1f}" for value in load)
    return (f"Load average (1/5/15 min) before {show(before)}, after {show(after)} on a shared "
            f"{os.cpu_count()}-core machine.")
