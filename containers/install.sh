#!/usr/bin/env bash
# install.sh - install xreduce and what its backends need, on Debian 12: the ONE install recipe.
#
# The Apptainer image runs it in %post (containers/xreduce.def), and `make demo` / `make test`
# run it on the CI machine, so every CI run proves the image's install steps on a clean Debian 12
# even where Apptainer itself cannot run.
#
# Usage: containers/install.sh [options]
#   --system LEVEL   Debian packages to install, only those missing (default: base)
#                      none   nothing
#                      base   python3 + its venv module                         (make demo)
#                      image  base + Open MPI (+ InfiniBand drivers), the OpenCL ICD loader,
#                             clinfo, HDF5 tools, libmunge2 (a host Slurm client)  (the image)
#                      test   image + PoCL from Debian, Slurm with accounting (munge, slurmdbd,
#                             MariaDB) and Lmod: what the test suite runs against  (make test)
#   --venv DIR       create DIR as a virtual environment (re-created if its interpreter no longer
#                    runs) and pip install xreduce into it
#   --python PY      interpreter that creates the venv (default: python3)
#   --extras LIST    pip extras of xreduce, e.g. all, test, "mpi,opencl" (default: all)
#   --with REQ       one more pip requirement installed beside xreduce (repeatable), e.g. ipykernel
#   --editable       pip install -e (a development checkout) instead of a copy
#   --source DIR     the xreduce source tree (default: the checkout holding this script)
#   --vendor-icds    write the OpenCL vendor ICD files (nvidia.icd, amdocl64.icd) into
#                    $XREDUCE_ICD_DIR (default /etc/OpenCL/vendors), so that `apptainer exec --nv`
#                    (or --rocm) exposes the host's GPU OpenCL driver inside the image
#   --list           print the packages and commands this would run, change nothing
#   --check          exit 1 (listing them) if Debian packages of LEVEL are missing; install nothing
#   -h, --help       this text
#
# Idempotent and fast when nothing is missing: packages are checked with dpkg-query, apt-get
# (update once, then install) runs only for the missing ones; services are NOT started here.
# Installing packages needs root (or sudo); nobody is asked anything when all are present.
# Never set OCL_ICD_VENDORS: it would hide the PoCL that pip installs (pocl-binary-distribution).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# -- the package sets (each level contains the one before) ---------------------------------
BASE_PKGS=(python3 python3-venv)
# mpi4py's wheel loads the image's libmpi.so.40 (Open MPI 4.1, PMIx-enabled for srun --mpi=pmix).
MPI_PKGS=(openmpi-bin libopenmpi-dev)
# The ICD loader reads /etc/OpenCL/vendors; PoCL itself comes from pip (the `opencl` extra).
OPENCL_LOADER_PKGS=(ocl-icd-libopencl1 clinfo)
HDF5_PKGS=(hdf5-tools)
# libmunge2: a host Slurm client bound into the image (the module wrapper does it) needs it;
# ibverbs-providers: the InfiniBand/RoCE user-space drivers of the image's Open MPI (UCX, verbs).
IMAGE_EXTRA_PKGS=(ca-certificates libmunge2 ibverbs-providers)
# Only for the tests: PoCL from Debian too, the single-node Slurm set proven on Debian 12 without
# systemd (slurm-wlm's parts named so that --no-install-recommends stays lean), and Lmod.
TEST_PKGS=(pocl-opencl-icd ocl-icd-opencl-dev slurmctld slurmd slurm-client slurmdbd munge mariadb-server lmod)

LEVEL=base VENV="" PYTHON=python3 EXTRAS=all EDITABLE=0 SOURCE="" LIST=0 CHECK=0 ICDS=0
WITH=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 2; }
log() { printf '[install] %s\n' "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --system) LEVEL=${2:?--system needs a LEVEL}; shift ;;
    --venv) VENV=${2:?--venv needs a DIR}; shift ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift ;;
    --extras) EXTRAS=${2?--extras needs a LIST}; shift ;;
    --with) WITH+=("${2:?--with needs a requirement}"); shift ;;
    --editable) EDITABLE=1 ;;
    --source) SOURCE=${2:?--source needs a DIR}; shift ;;
    --vendor-icds) ICDS=1 ;;
    --list|--dry-run) LIST=1 ;;
    --check) CHECK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

case "$LEVEL" in
  none) PKGS=() ;;
  base) PKGS=("${BASE_PKGS[@]}") ;;
  image) PKGS=("${BASE_PKGS[@]}" "${MPI_PKGS[@]}" "${OPENCL_LOADER_PKGS[@]}" "${HDF5_PKGS[@]}" "${IMAGE_EXTRA_PKGS[@]}") ;;
  test) PKGS=("${BASE_PKGS[@]}" "${MPI_PKGS[@]}" "${OPENCL_LOADER_PKGS[@]}" "${HDF5_PKGS[@]}" "${IMAGE_EXTRA_PKGS[@]}"
              "${TEST_PKGS[@]}") ;;
  *) die "--system $LEVEL: unknown level; use none, base, image or test" ;;
esac

SOURCE=${SOURCE:-$(dirname "$HERE")}
TARGET=$SOURCE
[ -n "$EXTRAS" ] && TARGET="${SOURCE}[${EXTRAS}]"
PIP_ARGS=(install --disable-pip-version-check)
[ "$EDITABLE" = 1 ] && PIP_ARGS+=(-e)
PIP_ARGS+=("$TARGET" ${WITH[@]+"${WITH[@]}"})
ICD_DIR=${XREDUCE_ICD_DIR:-/etc/OpenCL/vendors}

if [ "$LIST" = 1 ]; then
  echo "system $LEVEL: ${PKGS[*]}"
  [ -n "$VENV" ] && echo "venv $VENV: $PYTHON -m venv $VENV; $VENV/bin/python -m pip ${PIP_ARGS[*]}"
  [ "$ICDS" = 1 ] && echo "icds $ICD_DIR: nvidia.icd amdocl64.icd"
  exit 0
fi

# -- Debian packages ---------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_packages() {
  [ ${#PKGS[@]} -eq 0 ] && return 0
  if ! command -v dpkg-query >/dev/null; then
    log "not a Debian-like system: install by hand the equivalents of: ${PKGS[*]}"
    return 0
  fi
  local missing=() p
  for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then
    log "all $LEVEL packages present"
    return 0
  fi
  if [ "$CHECK" = 1 ]; then
    log "missing $LEVEL packages: ${missing[*]}" >&2
    exit 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo=(sudo)
    else log "missing packages and not root (no sudo): as root run  apt-get install ${missing[*]}" >&2; exit 1
    fi
  fi
  log "installing: ${missing[*]}"
  # Keep maintainer scripts from starting services (mariadb, munge, slurm...): there may be no init
  # system (containers, CI). policy-rc.d exit code 101 = "action forbidden"; removed again after.
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    added=1
  fi
  # apt's progress goes to a log, shown only when something fails (keeps CI output readable).
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  local apt_log; apt_log=$(mktemp -t xreduce-apt.XXXXXX.log)
  local ok=1
  { "${apt[@]}" update -qq && "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}"; } \
      >"$apt_log" 2>&1 || ok=0
  [ "$added" = 1 ] && "${sudo[@]}" rm -f "$policy"
  if [ "$ok" = 0 ]; then
    tail -n 40 "$apt_log" >&2
    log "apt-get failed (full log: $apt_log)" >&2
    exit 1
  fi
  rm -f "$apt_log"
  log "installed: ${missing[*]}"
}

# -- xreduce into a virtual environment --------------------------------------------------------
install_venv() {
  [ -f "$SOURCE/pyproject.toml" ] || die "--source $SOURCE: no pyproject.toml there (not an xreduce source tree)"
  local venv_abs src_abs
  venv_abs=$(realpath -m "$VENV") src_abs=$(realpath -m "$SOURCE")
  case "$src_abs/" in
    "$venv_abs"/*) die "--venv $VENV holds the source $SOURCE: re-creating the venv would delete it; use another folder" ;;
  esac
  # A venv whose interpreter no longer runs (moved, Python upgraded) is re-created.
  if ! "$VENV/bin/python" -c '' 2>/dev/null; then
    command -v "$PYTHON" >/dev/null || die "--python $PYTHON: not found (install it, or run with --system base)"
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv --clear "$VENV"
  fi
  log "pip ${PIP_ARGS[*]}"
  "$VENV/bin/python" -m pip "${PIP_ARGS[@]}"
}

# -- OpenCL vendor ICDs --------------------------------------------------------------------------
# `apptainer exec --nv` binds the host's libnvidia-opencl.so.1 (--rocm: libamdocl64.so) but not
# the ICD file naming it; a loader skips an ICD whose library is absent, so CPU nodes are unaffected.
write_icds() {
  mkdir -p "$ICD_DIR"
  echo libnvidia-opencl.so.1 >"$ICD_DIR/nvidia.icd"
  echo libamdocl64.so >"$ICD_DIR/amdocl64.icd"
  log "wrote $ICD_DIR/nvidia.icd and amdocl64.icd"
}

install_packages
[ "$CHECK" = 1 ] && exit 0
[ "$ICDS" = 1 ] && write_icds
[ -n "$VENV" ] && install_venv
exit 0
