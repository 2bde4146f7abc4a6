#!/usr/bin/env bash
# The checks to run once on a machine with an accelerator, in one command (sized for ≤ 8 minutes
# on one GPU; not yet run on one):
#   1. tests/test_strategy_parity.py on the accelerator: every vectorisation strategy (vmap is the
#      accelerator default) against the eager loop in float64, phase by phase;
#   2. experiments/compare_devices.py: one FREE iteration + evaluation on 1 device vs all devices;
#   3. experiments/benchmark.py --suites=maml,free,inversion, figures written to BENCHMARKS.md.
#
#   bash experiments/device_check.sh            # on the accelerator machine
#   DEVICE_CHECK_SMALL=1 bash experiments/device_check.sh   # tiny sizes: checks the script on CPU
#
# Output also goes to device_check.log. PYTHON selects the interpreter (default: python);
# DEVICE_CHECK_SUITES the benchmark suites (default: maml,free,inversion).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SMALL=${DEVICE_CHECK_SMALL:-0}
SUITES=${DEVICE_CHECK_SUITES:-maml,free,inversion}
exec > >(tee device_check.log) 2>&1

# tests/conftest.py defaults to CPU with 4 forced devices; on the accelerator machine the parity
# suite must run on the accelerator, so the platform is left to JAX unless SMALL (CPU) is asked.
if [ "$SMALL" = 1 ]; then
  export JAX_PLATFORMS=cpu
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=4"   # so step 2 compares 1 vs 4
  parity_tests=(tests/test_strategy_parity.py -k "replay_meta_gradient_equal and first_order")
  small_flag=--small
else
  export JAX_PLATFORMS=${JAX_PLATFORMS:-}
  parity_tests=(tests/test_strategy_parity.py)
  small_flag=
fi

start=$SECONDS
echo "== [1/3] strategy parity ($($PYTHON -c 'import jax; print(jax.default_backend(), len(jax.devices()))'))"
$PYTHON -m pytest -q -p no:cacheprovider "${parity_tests[@]}"
echo "== [2/3] 1 device vs all devices ($((SECONDS - start)) s so far)"
$PYTHON experiments/compare_devices.py $small_flag
echo "== [3/3] benchmarks $SUITES -> BENCHMARKS.md ($((SECONDS - start)) s so far; --small writes nothing)"
$PYTHON experiments/benchmark.py --suites="$SUITES" $small_flag
echo "== device check done in $((SECONDS - start)) s"
