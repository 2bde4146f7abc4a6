"""Where the test suite's time goes: a pytest plugin that records, per test, JAX's compile, trace
and lowering time and the glyph renderings (BENCHMARKS.md, "Test suite", 2026-12-06 late evening).

  PYTHONPATH=docs SUITE_PROFILE=profile.jsonl python -m pytest -q -n 2 --dist loadgroup -p suite_profile tests
  python docs/suite_profile.py profile.jsonl          # totals, per worker and per module

Each test appends one JSON line: its wall seconds (setup, call and teardown), the seconds of XLA
compiling split at 0.3 s per program (``compile_small`` counts the one-op programs of eager code),
tracing, lowering, glyph rendering, and the xdist worker. Subprocesses a test starts are not seen.
"""
import collections
import json
import os
import sys
import time

import pytest

SMALL_PROGRAM_SECONDS = 0.3
_seconds: collections.Counter = collections.Counter()
_counts: collections.Counter = collections.Counter()


def _listen(event: str, duration: float, **_) -> None:
    if event.endswith("backend_compile_duration"):
        kind = "compile_small" if duration < SMALL_PROGRAM_SECONDS else "compile_big"
        _seconds[kind] += duration
        _counts[kind] += 1
    elif event.endswith("jaxpr_trace_duration"):
        _seconds["trace"] += duration
    elif event.endswith("jaxpr_to_mlir_module_duration"):
        _seconds["lower"] += duration


def pytest_configure(config):
    from jax._src import monitoring

    from free_jax.data import glyphs
    monitoring.register_event_duration_secs_listener(_listen)
    render = glyphs._generate

    def timed_render(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return render(*args, **kwargs)
        finally:
            _seconds["glyph_render"] += time.perf_counter() - begin
            _counts["glyph_render"] += 1
    glyphs._generate = timed_render


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _seconds.clear()
    _counts.clear()
    begin = time.perf_counter()
    yield
    record = {"id": item.nodeid, "total": round(time.perf_counter() - begin, 2),
              "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
              **{key: round(value, 2) for key, value in _seconds.items()},
              **{f"n_{key}": value for key, value in _counts.items()}}
    with open(os.environ.get("SUITE_PROFILE", "suite_profile.jsonl"), "a") as out:
        out.write(json.dumps(record) + "\n")


def summarise(path: str) -> None:
    records = [json.loads(line) for line in open(path)]
    keys = ("total", "compile_big", "compile_small", "trace", "lower", "glyph_render")
    print({key: round(sum(r.get(key, 0) for r in records)) for key in keys},
          "one-op programs:", sum(r.get("n_compile_small", 0) for r in records))
    for name, field in (("worker", lambda r: r["worker"]), ("module", lambda r: r["id"].split("::")[0])):
        totals = collections.Counter()
        for record in records:
            totals[field(record)] += record["total"]
        print(f"per {name}:", {key: round(value) for key, value in totals.most_common()})


if __name__ == "__main__":
    summarise(sys.argv[1])
