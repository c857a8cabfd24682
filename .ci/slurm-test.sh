#!/usr/bin/env bash
# The SLURM end-to-end test on its own: a one-node cluster with 2 fake GPUs, then
# tests/test_slurm.py, then the daemons stopped by PID (also on failure or Ctrl-C).
#   bash .ci/slurm-test.sh            (root, Debian/Ubuntu; installs Slurm if missing)
# Run from an environment where `pip install -e '.[test]'` was done: the cluster's jobs
# inherit PATH (sbatch --export=ALL) and must find the same python.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
trap 'bash .ci/slurm-down.sh' EXIT
SLURM_FAKE_GPUS=2 bash .ci/slurm-up.sh
python3 -m pytest -q -rs tests/test_slurm.py "$@"
echo "slurm-test total: $(( $(date +%s) - T0 )) s"
