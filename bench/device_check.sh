#!/usr/bin/env bash
# The device check in one short script, for the first lent GPU (or any device: DEVICE=cpu runs it here):
#   bash bench/device_check.sh [OUT]        (OUT: where its reports go; default $OUT, else runs/device_check)
# DEVICE (default cuda), REPEATS (timed repetitions, default 5) and SPEC (default bench/sweeps/device_check.yaml)
# are read from the environment.
# 1. QGPO's training steps and guided acting on the device beside the CPU (`diffbench perf qgpo`);
# 2. every algorithm's own act at the cpu preset on the device (`diffbench perf acting`), and the Mish networks'
#    training steps with the fused Mish (Triton on CUDA) beside the eager one (`diffbench perf kernels`);
# 3. the device-check sweep (bench/sweeps/device_check.yaml: one seed of the one-step spec on hopper-medium-small)
#    on the device, and its cost per algorithm and stage (`diffbench perf sweep`). Each step's report is written
#    before the next starts, so a check cut short by its time limit keeps what it finished.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/device_check}}
device=${DEVICE:-cuda}
repeats=${REPEATS:-5}
spec=${SPEC:-bench/sweeps/device_check.yaml}
mkdir -p "$out"
python - "$device" <<'PY'
import sys, torch
device = sys.argv[1]
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"device check: DEVICE={device} but torch {torch.__version__} sees no CUDA device; "
             "install a CUDA build of torch, or run DEVICE=cpu")
print(f"device check on {device}: torch {torch.__version__}" +
      (f", {torch.cuda.get_device_name()}" if device.startswith("cuda") else ""))
PY
devices=$device; [ "$device" != cpu ] && devices="$device,cpu"
diffbench perf qgpo --device "$devices" --repeats "$repeats" --out "$out/perf_qgpo.md"
diffbench perf acting --device "$device" --repeats "$repeats" --out "$out/perf_acting.md"
diffbench perf kernels --device "$device" --repeats "$repeats" --out "$out/perf_kernels.md"
python -c "import sys; from pathlib import Path; from bench.harness.sweep import load_sweep
print('\n'.join(load_sweep(Path(sys.argv[1])).datasets))" "$spec" | while read -r dataset; do
    diffbench datasets info "$dataset" >/dev/null 2>&1 || diffbench datasets generate "$dataset" --no-progress
done
diffbench sweep "$spec" --results "$out/store" --device "$device" --no-progress
diffbench perf sweep "$spec" --results "$out/store" --out "$out/sweep_cost.md"
echo "device check: reports in $out"
