#!/usr/bin/env bash
# install-system-packages.sh - install the Debian 12 packages xreduce needs, only those missing.
#
# Usage: tests/services/install-system-packages.sh [base|test]
#   base  what a virtual environment needs: python3 and its venv module      (make demo)
#   test  base + the real services the test suite runs against:              (make test)
#         Open MPI, PoCL (OpenCL on the CPU), single-node Slurm with accounting
#         (munge, slurmdbd, MariaDB) and the HDF5 command-line tools.
#
# Idempotent and fast when nothing is missing: each package is checked with dpkg-query, and
# apt-get (update once, then install) runs only for the missing ones. Installing needs root
# (or sudo); a non-root user with everything installed is never asked for anything.
# Services are NOT started here: tests/services/ scripts of their own do that.
set -euo pipefail

LEVEL=${1:-base}

BASE_PKGS=(python3 python3-venv)
MPI_PKGS=(openmpi-bin libopenmpi-dev)
OPENCL_PKGS=(pocl-opencl-icd ocl-icd-libopencl1 ocl-icd-opencl-dev clinfo)
# The Slurm set proven to work on Debian 12 without systemd (slurm-wlm is the metapackage
# of slurmctld + slurmd + slurm-client; naming them keeps --no-install-recommends lean).
SLURM_PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
HDF5_PKGS=(hdf5-tools)

case "$LEVEL" in
  base) PKGS=("${BASE_PKGS[@]}") ;;
  test) PKGS=("${BASE_PKGS[@]}" "${MPI_PKGS[@]}" "${OPENCL_PKGS[@]}" "${SLURM_PKGS[@]}" "${HDF5_PKGS[@]}") ;;
  *) echo "usage: $0 [base|test]" >&2; exit 2 ;;
esac

log() { printf '[install-system-packages] %s\n' "$*"; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if ! command -v dpkg-query >/dev/null; then
  log "not a Debian-like system: skipping; install by hand the equivalents of: ${PKGS[*]}"
  exit 0
fi

MISSING=()
for p in "${PKGS[@]}"; do installed "$p" || MISSING+=("$p"); done
if [ ${#MISSING[@]} -eq 0 ]; then
  log "all $LEVEL packages present"
  exit 0
fi

# Root runs apt directly; anyone else goes through sudo, or is told what to install.
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  log "missing packages and not root (no sudo): as root run  apt-get install ${MISSING[*]}" >&2
  exit 1
fi

log "installing: ${MISSING[*]}"
# Keep maintainer scripts from starting services (mariadb, munge, slurm...) at install time:
# there may be no init system (containers, CI), and starting services is not this script's job.
# policy-rc.d exit code 101 = "action forbidden"; removed again on exit if we created it.
POLICY=/usr/sbin/policy-rc.d
POLICY_ADDED=0
cleanup() { if [ "$POLICY_ADDED" = 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod +x "$POLICY"
  POLICY_ADDED=1
fi

# apt's progress goes to a log, shown only when something fails (keeps CI output readable).
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
APT_LOG=$(mktemp -t xreduce-apt.XXXXXX.log)
if ! { "${APT[@]}" update -qq && "${APT[@]}" install -y -qq --no-install-recommends "${MISSING[@]}"; } \
    >"$APT_LOG" 2>&1; then
  tail -n 40 "$APT_LOG" >&2
  log "apt-get failed (full log: $APT_LOG)" >&2
  exit 1
fi
rm -f "$APT_LOG"
log "installed: ${MISSING[*]}"
