#!/usr/bin/env bash
# xreduce - run xreduce from its Apptainer image, as if it were installed here.
#
# The xreduce environment module puts this wrapper on PATH (publish-cvmfs.sh installs it as
# <version>/bin/xreduce); every argument goes to the xreduce inside the image:
#
#   apptainer exec [--nv] [--bind <binds>] <image> xreduce "$@"
#
# Environment:
#   XREDUCE_IMAGE    the image, an .sif file or an unpacked sandbox folder (the module sets it;
#                    default: the sandbox, else xreduce.sif, beside this wrapper's bin/)
#   XREDUCE_BINDS    host paths to bind, comma-separated, Apptainer's src[:dest[:ro]] syntax
#                    (default: /data where it exists). $HOME, /tmp and the current folder are
#                    bound by Apptainer itself.
#   XREDUCE_NV       1: always --nv; 0: never; unset: --nv when an NVIDIA GPU is visible (/dev/nvidia0...)
#   XREDUCE_SLURM    0: do not bind the host's Slurm client; unset: bind it when `sbatch` is on
#                    PATH, so that `xreduce submit/status/cancel` work from inside the image
#   APPTAINER        the apptainer command (default: apptainer on PATH)
# Jobs submitted from here run in the same image: the image's xreduce sees XREDUCE_IMAGE and
# XREDUCE_BINDS (Apptainer passes the host environment in), and XREDUCE_APPTAINER names the
# host's apptainer for the job scripts.
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
apptainer=${APPTAINER:-apptainer}
if ! apptainer_path=$(command -v "$apptainer"); then
  echo "xreduce: \`$apptainer\` not found on PATH: this xreduce runs in an Apptainer image" \
       "(load Apptainer first, e.g. \`module load apptainer\`, or set APPTAINER=/path/to/apptainer)" >&2
  exit 127
fi

image=${XREDUCE_IMAGE:-}
if [ -z "$image" ]; then
  for candidate in "$here/../sandbox" "$here/../xreduce.sif"; do
    if [ -e "$candidate" ]; then image=$(readlink -f "$candidate"); break; fi
  done
fi
if [ -z "$image" ] || [ ! -e "$image" ]; then
  echo "xreduce: no image at '${image:-$here/../xreduce.sif}': set XREDUCE_IMAGE to the xreduce.sif" \
       "(or sandbox folder) to use, or load the xreduce module" >&2
  exit 1
fi

args=(exec)
case "${XREDUCE_NV:-auto}" in
  1) args+=(--nv) ;;
  0) ;;
  *) if compgen -G '/dev/nvidia[0-9]*' >/dev/null; then args+=(--nv); fi ;;
esac

binds=()
if [ -n "${XREDUCE_BINDS:-}" ]; then
  IFS=, read -r -a listed <<<"$XREDUCE_BINDS"
  for bind in "${listed[@]}"; do
    bind=${bind#"${bind%%[![:space:]]*}"}; bind=${bind%"${bind##*[![:space:]]}"}   # trim blanks
    if [ -n "$bind" ]; then binds+=("$bind"); fi
  done
elif [ -d /data ]; then
  binds=(/data)
fi

# The host's Slurm client inside the image: its commands (appended to the image's PATH, after
# the image's own programs), the libraries they load from their RUNPATH, the Slurm config and
# the munge socket. The image ships libmunge2; host and image must have compatible glibc.
if [ "${XREDUCE_SLURM:-auto}" != 0 ] && sbatch=$(command -v sbatch); then
  bindir=$(dirname "$(readlink -f "$sbatch")")
  binds+=("$bindir:/opt/xreduce/host-slurm/bin")
  export APPTAINERENV_APPEND_PATH=/opt/xreduce/host-slurm/bin
  while read -r lib; do
    if [ -n "$lib" ]; then binds+=("$lib"); fi
  done < <(ldd "$sbatch" 2>/dev/null | awk '$3 ~ /slurm/ {print $3}' | xargs -r -n1 dirname | sort -u)
  conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
  if [ -e "$conf" ]; then binds+=("$(dirname "$conf")"); fi
  for socket in /run/munge /var/run/munge; do
    if [ -d "$socket" ]; then binds+=("$(readlink -f "$socket")"); break; fi
  done
fi

if [ ${#binds[@]} -gt 0 ]; then
  joined=$(IFS=,; echo "${binds[*]}")
  args+=(--bind "$joined")
fi

export XREDUCE_IMAGE=$image XREDUCE_APPTAINER=$apptainer_path
exec "$apptainer" "${args[@]}" "$image" xreduce "$@"
