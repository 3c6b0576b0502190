#!/usr/bin/env bash
# One prepared run, on a GPU, of the retrieval, fixed-point, training-step and scale
# benchmarks, printing the same tables as on a CPU; sized to finish in under 5 minutes
# on one H100 (one sample per row: --quick everywhere).
#
#   benchmarks/gpu.sh            # on the GPU machine, from the repository root
#   benchmarks/gpu.sh --small    # shrunken sizes (K=128, D=64, B=32), to check the
#                                # script on a CPU (about 6 minutes on 2 loaded cores;
#                                # at these sizes overheads dominate: ignore the targets)
#
# Ratios are measured in one process, interleaved; compare a GPU's ratios with a CPU's,
# never its times.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--small" ]]; then
    export HL_BENCH_SMALL=1
    scale=(--quick)
else
    scale=(--quick)
fi
python -c "import jax; print('devices:', jax.devices())"
echo "== retrieval and training step through descend (bench_memory.py 1, 2) =="
python benchmarks/bench_memory.py --quick --only 1 2
echo "== time to a fixed point, training through it (bench_dynamics.py 2, 3) =="
python benchmarks/bench_dynamics.py --quick --only 2 3
echo "== scale: memory and time against the number of stored patterns (bench_scale.py) =="
python benchmarks/bench_scale.py "${scale[@]}"
