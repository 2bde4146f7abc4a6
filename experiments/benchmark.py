"""Runs benchmark suites and writes their figures to BENCHMARKS.md.

  python experiments/benchmark.py --suites=maml,pooling,convloop,zoo,inversion,free,methods [--small]
  python experiments/benchmark.py --suites=scaling     # 1/2/4 forced CPU devices, 1/2 processes (alone!)

Each suite is ``free_jax.benchmarks.<name>.run(small: bool) -> str`` (a markdown body); the
harness heads it with the machine, command and date.
"""
import importlib

from absl import app, flags

from free_jax.benchmarks import harness
from free_jax.host_memory import release_after_compiles

SUITES = ("maml", "pooling", "convloop", "zoo", "inversion", "free", "methods", "scaling")

_SUITES = flags.DEFINE_list("suites", list(SUITES), f"Suites to run, any of {SUITES}.")
_SMALL = flags.DEFINE_bool("small", False, "Tiny shapes: checks the suites run, figures not meaningful.")
_OUTPUT = flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file whose suite sections are replaced.")


def main(argv):
    del argv
    release_after_compiles()   # as the training binaries do: the peaks measured are the ones users get
    for suite in _SUITES.value:
        if suite not in SUITES:
            raise app.UsageError(f"unknown suite {suite!r}; choose from {SUITES}")
    for suite in _SUITES.value:
        print(f"[benchmark] running suite {suite} ...", flush=True)
        body = importlib.import_module(f"free_jax.benchmarks.{suite}").run(small=_SMALL.value)
        print(body, flush=True)
        if not _SMALL.value:
            harness.write_section(_OUTPUT.value, suite, body)


if __name__ == "__main__":
    app.run(main)
