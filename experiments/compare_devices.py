"""One FREE iteration and an evaluation on one device and on all visible devices, compared.

  python experiments/compare_devices.py [--small]

Teachers, replay tasks and evaluation episodes are split over the ``tasks`` mesh
(``free_jax.sharding``); this checks the split computes what one device computes (float32,
relative L2 difference ≤ 1e-4 of the meta-learner, generator, bank and metrics). Exits 1 if
not. With one visible device both runs use it. tests/test_mesh.py makes the same comparison in
float64 on 4 forced CPU devices (≤ 1e-9).
"""
import sys

from absl import app, flags

from free_jax.benchmarks import scaling

_SMALL = flags.DEFINE_bool("small", False, "Tiny shapes (seconds on CPU).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    report, ok = scaling.compare(small=_SMALL.value)
    print(report, flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app.run(main)
