#!/usr/bin/env bash
# install-system-packages.sh - install the Debian 12 packages xreduce needs, only those missing.
#
# Usage: tests/services/install-system-packages.sh [base|image|test]
#   base   what a virtual environment needs: python3 and its venv module         (make demo)
#   image  base + what the Apptainer image holds: Open MPI, the OpenCL ICD loader, HDF5 tools
#   test   image + the real services the test suite runs against:               (make test)
#          PoCL (OpenCL on the CPU), single-node Slurm with accounting (munge, slurmdbd,
#          MariaDB) and Lmod (the environment-module test).
#
# The package lists live in ONE place, containers/install.sh, which the image's %post runs too:
# this script is its `--system LEVEL` step, kept under its old name for the scripts that call it.
set -euo pipefail
LEVEL=${1:-base}
case "$LEVEL" in
  base|image|test) ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [base|image|test]" >&2; exit 2 ;;
esac
exec bash "$(dirname "$0")/../../containers/install.sh" --system "$LEVEL"
