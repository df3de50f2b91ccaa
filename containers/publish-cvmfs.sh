#!/usr/bin/env bash
# publish-cvmfs.sh - publish an xreduce image on CVMFS (or into a plain folder), with its module.
#
# Usage: containers/publish-cvmfs.sh [options] VERSION
#   --image FILE        the image to publish (default: xreduce.sif in the current folder)
#   --sandbox           also publish the image unpacked (apptainer build --sandbox): CVMFS stores
#                       and fetches it file by file, deduplicated across versions; the module
#                       then runs the sandbox
#   --sandbox-from DIR  publish this already unpacked sandbox folder (implies --sandbox)
#   --repo NAME         the CVMFS repository (default: $CVMFS_REPO), e.g. software.esrf.fr: the
#                       files are written inside `cvmfs_server transaction NAME` and published with
#                       `cvmfs_server publish NAME` (run this on the repository's publisher machine)
#   --repo-dir DIR      publish into a plain folder instead (tests, or sites that sync it another way)
#   --prefix PATH       where users see the root (default: /cvmfs/NAME, or DIR): the module and
#                       wrapper name the image by this path
#   --no-latest         leave the `latest` link and the default module as they are (e.g. a backport)
#   -h, --help          this text
#
# Writes, under the repository root:
#   xreduce/VERSION/xreduce.sif         the image
#   xreduce/VERSION/sandbox/            the unpacked image (--sandbox, --sandbox-from)
#   xreduce/VERSION/bin/xreduce         the wrapper that runs it (containers/xreduce-wrapper.sh)
#   xreduce/latest -> VERSION
#   modulefiles/xreduce/VERSION         the environment module (containers/modulefile.tcl)
#   modulefiles/xreduce/default -> VERSION
# Users then run:  module use PREFIX/modulefiles; module load xreduce; xreduce selftest
# A published version is never overwritten (jobs may be running it): publish a new version.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSION="" IMAGE=xreduce.sif SANDBOX=0 SANDBOX_FROM="" REPO="" REPO_DIR="" PREFIX="" LATEST=1
APPTAINER=${APPTAINER:-apptainer}
CVMFS_MOUNT=${CVMFS_MOUNT:-/cvmfs}   # where repositories are mounted (a test may point it elsewhere)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf 'publish-cvmfs: error: %s\n' "$*" >&2; exit "${2:-1}"; }
log() { printf 'publish-cvmfs: %s\n' "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --image) IMAGE=${2:?--image needs a FILE}; shift ;;
    --sandbox) SANDBOX=1 ;;
    --sandbox-from) SANDBOX_FROM=${2:?--sandbox-from needs a DIR}; SANDBOX=1; shift ;;
    --repo) REPO=${2:?--repo needs a NAME}; shift ;;
    --repo-dir) REPO_DIR=${2:?--repo-dir needs a DIR}; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a PATH}; shift ;;
    --no-latest) LATEST=0 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" 2 ;;
    *) [ -z "$VERSION" ] || die "one VERSION only (got $VERSION and $1)" 2; VERSION=$1 ;;
  esac
  shift
done

# -- check everything before touching the repository --------------------------------------------
[ -n "$VERSION" ] || die "give the VERSION to publish, e.g. $0 --repo-dir /tmp/sw 0.1.0 (see --help)" 2
if ! [[ "$VERSION" =~ ^[0-9A-Za-z][0-9A-Za-z._+-]*$ ]] || [ "$VERSION" = latest ] || [ "$VERSION" = default ]; then
  die "VERSION '$VERSION' must be a plain version such as 0.1.0 (letters, digits, . _ + -; not latest/default)" 2
fi
[ -f "$IMAGE" ] || die "--image $IMAGE: no such file (build it first: apptainer build xreduce.sif containers/xreduce.def)"
if [ -n "$SANDBOX_FROM" ] && [ ! -d "$SANDBOX_FROM" ]; then die "--sandbox-from $SANDBOX_FROM: no such folder"; fi
if [ "$SANDBOX" = 1 ] && [ -z "$SANDBOX_FROM" ] && ! command -v "$APPTAINER" >/dev/null; then
  die "--sandbox needs apptainer to unpack the image (or give --sandbox-from DIR)"
fi

if [ -n "$REPO_DIR" ] && [ -n "$REPO" ]; then
  die "give --repo NAME (CVMFS) or --repo-dir DIR, not both" 2
fi
[ -n "$REPO_DIR" ] || REPO=${REPO:-${CVMFS_REPO:-}}
if [ -n "$REPO_DIR" ]; then
  MODE=dir
  mkdir -p "$REPO_DIR"
  ROOT=$(cd "$REPO_DIR" && pwd)
  PREFIX=${PREFIX:-$ROOT}
elif [ -n "$REPO" ]; then
  MODE=cvmfs
  command -v cvmfs_server >/dev/null || die "cvmfs_server not found: run this on the publisher (stratum 0) of $REPO, or use --repo-dir DIR"
  ROOT=$CVMFS_MOUNT/$REPO
  PREFIX=${PREFIX:-/cvmfs/$REPO}
else
  die "give --repo NAME (a CVMFS repository) or --repo-dir DIR (a plain folder); see --help" 2
fi
case "$PREFIX" in
  /*) ;;
  *) die "--prefix $PREFIX must be an absolute path" 2 ;;
esac
[[ "$PREFIX" != *"|"* ]] || die "--prefix $PREFIX: '|' is not allowed in it" 2

DEST=$ROOT/xreduce/$VERSION
MODULE=$ROOT/modulefiles/xreduce/$VERSION
for existing in "$DEST" "$MODULE"; do
  if [ -e "$existing" ] || [ -L "$existing" ]; then
    die "$existing already exists: a published version is never overwritten (jobs may be running it); publish a new version"
  fi
done

# -- write -------------------------------------------------------------------------------------
STAGE=""
finish() {
  local code=$?
  [ -n "$STAGE" ] && rm -rf "$STAGE"
  [ -n "${MODULE_TMP:-}" ] && rm -f "$MODULE_TMP"
  if [ "$code" != 0 ] && [ "$MODE" = cvmfs ] && [ "${OPENED:-0}" = 1 ]; then
    log "failed: aborting the transaction of $REPO (nothing published)" >&2
    cvmfs_server abort -f "$REPO" || true
  fi
}
trap finish EXIT

OPENED=0
if [ "$MODE" = cvmfs ]; then
  log "cvmfs_server transaction $REPO"
  cvmfs_server transaction "$REPO"
  OPENED=1
  # checked again inside the transaction: another publisher may have been faster
  [ ! -e "$DEST" ] || die "$DEST appeared meanwhile: not overwritten"
fi

mkdir -p "$ROOT/xreduce" "$ROOT/modulefiles/xreduce"
# Staged beside the destination and renamed into place: a failure leaves no half version.
STAGE=$(mktemp -d "$ROOT/xreduce/.$VERSION.staging.XXXXXX")
chmod 0755 "$STAGE"
install -m 0644 "$IMAGE" "$STAGE/xreduce.sif"
install -d -m 0755 "$STAGE/bin"
install -m 0755 "$HERE/xreduce-wrapper.sh" "$STAGE/bin/xreduce"
RUN_IMAGE=$PREFIX/xreduce/$VERSION/xreduce.sif
if [ "$SANDBOX" = 1 ]; then
  if [ -n "$SANDBOX_FROM" ]; then
    cp -a "$SANDBOX_FROM" "$STAGE/sandbox"
  else
    log "unpacking the image: $APPTAINER build --sandbox"
    "$APPTAINER" build --sandbox "$STAGE/sandbox" "$STAGE/xreduce.sif"
  fi
  [ -d "$STAGE/sandbox" ] || die "the sandbox was not created in $STAGE/sandbox"
  # its own nested catalog: clients load the many small files' metadata only when used
  [ "$MODE" = cvmfs ] && touch "$STAGE/.cvmfscatalog"
  RUN_IMAGE=$PREFIX/xreduce/$VERSION/sandbox
fi
MODULE_TMP=$MODULE.staging
sed -e "s|@VERSION@|$VERSION|g" -e "s|@ROOT@|$PREFIX/xreduce/$VERSION|g" -e "s|@IMAGE@|$RUN_IMAGE|g" \
    "$HERE/modulefile.tcl" >"$MODULE_TMP"
chmod 0644 "$MODULE_TMP"
mv "$STAGE" "$DEST"
STAGE=""
mv "$MODULE_TMP" "$MODULE"
if [ "$LATEST" = 1 ]; then
  ln -sfn "$VERSION" "$ROOT/xreduce/latest"
  ln -sfn "$VERSION" "$ROOT/modulefiles/xreduce/default"
fi

if [ "$MODE" = cvmfs ]; then
  log "cvmfs_server publish $REPO"
  cvmfs_server publish "$REPO"
  OPENED=0
fi
log "published xreduce $VERSION: $PREFIX/xreduce/$VERSION (image $RUN_IMAGE)"
log "users: module use $PREFIX/modulefiles && module load xreduce/$VERSION && xreduce selftest"
