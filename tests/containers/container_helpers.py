"""Helpers of the container tests: a stand-in for ``apptainer``, Lmod, the definition file parsed.

Apptainer is not packaged for Debian 12, so the image is never built here; everything around it
runs for real. ``apptainer`` itself is replaced at the boundary by a small script that records
its argv and does on the host what ``apptainer exec`` would do inside the image: check that the
image and every bind source exist, then run the command (``xreduce`` → this venv's xreduce).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERS = REPO / "containers"
LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")

_STUB = r"""#!/usr/bin/env bash
# A stand-in for apptainer (not installable on Debian 12): records its argv, then acts on the host.
set -euo pipefail
line=$(printf '%q ' "$@"); printf '%s\n' "$line" >>"@LOG@"   # one write: MPI ranks call it at once
case "$1" in
  build)   # build --sandbox DEST IMAGE: unpack (here: a folder with the image's metadata dir)
    [ "$2" = --sandbox ] || { echo "stub apptainer: only build --sandbox" >&2; exit 2; }
    [ -n "${STUB_FAIL_BUILD:-}" ] && { echo "stub apptainer: FATAL: unpacking failed" >&2; exit 255; }
    mkdir -p "$3/.singularity.d" "$3/opt/xreduce/bin"; cp "$4" "$3/.singularity.d/from.sif"; exit 0 ;;
  exec) shift ;;
  *) echo "stub apptainer: unsupported command $1" >&2; exit 2 ;;
esac
while [[ "$1" == --* ]]; do
  case "$1" in
    --bind)
      IFS=, read -r -a binds <<<"$2"
      for bind in "${binds[@]}"; do
        [ -e "${bind%%:*}" ] || { echo "stub apptainer: FATAL: mount source ${bind%%:*} doesn't exist" >&2; exit 255; }
      done
      shift 2 ;;
    *) shift ;;
  esac
done
image=$1; shift
[ -e "$image" ] || { echo "stub apptainer: FATAL: could not open image $image" >&2; exit 255; }
program=$1; shift
case "$program" in
  xreduce) exec "@PYTHON@" -m hpc.cli "$@" ;;
  python|python3) exec "@PYTHON@" "$@" ;;
  *) exec "$program" "$@" ;;
esac
"""


@dataclass
class ApptainerStub:
    """The stub's folder (put it first on PATH) and its record of calls."""

    bin: Path
    log: Path

    @property
    def path(self) -> Path:
        return self.bin / "apptainer"

    def calls(self) -> list[list[str]]:
        """Each call's argv (without the program name), in order."""
        if not self.log.exists():
            return []
        return [shlex.split(line) for line in self.log.read_text().splitlines() if line.strip()]


def make_apptainer_stub(tmp_path: Path) -> ApptainerStub:
    folder = tmp_path / "stub-bin"
    folder.mkdir()
    log = tmp_path / "apptainer-calls.log"
    script = folder / "apptainer"
    script.write_text(_STUB.replace("@LOG@", str(log)).replace("@PYTHON@", sys.executable))
    script.chmod(0o755)
    return ApptainerStub(folder, log)


def make_fake_image(tmp_path: Path) -> Path:
    """A file standing for xreduce.sif (the stub only checks that it exists)."""
    image = tmp_path / "images" / "xreduce.sif"
    image.parent.mkdir()
    image.write_bytes(b"SIF stand-in for tests\n")
    return image


def run_lmod(script: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run bash lines after sourcing Lmod's init script (Debian's lmod package)."""
    if not LMOD_INIT.is_file():
        pytest.fail(f"Lmod is not installed ({LMOD_INIT} missing): run `make test` (it installs it) or, as root, "
                    "`apt-get install lmod`")
    return subprocess.run(["bash", "-c", f"set -e; source {LMOD_INIT}; {script}"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without module/xreduce/apptainer state, plus ``extra``."""
    drop = re.compile(r"^(XREDUCE_|APPTAINER|SINGULARITY|CVMFS_|LMOD|MODULE|_LMFILES_|LOADEDMODULES|__LMOD)")
    env = {k: v for k, v in os.environ.items() if not drop.match(k)}
    env.update(extra)
    return env


def publish(repo_dir: Path, version: str, image: Path, *args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(CONTAINERS / "publish-cvmfs.sh"), "--image", str(image), *args, version,
                           *(["--repo-dir", str(repo_dir)] if repo_dir else [])],
                          capture_output=True, text=True, env=env, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"publish-cvmfs.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


# -- the definition file ------------------------------------------------------------------------
_SECTION = re.compile(r"^%(\w+)\s*(.*)$")


def parse_definition(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section name → body) of an Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match.group(1), [])
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                key, sep, value = line.partition(":")
                assert sep, f"header line without 'Keyword: value': {line!r}"
                header[key.strip()] = value.strip()
            continue
        current.append(line)
    return header, {name: "\n".join(lines).strip("\n") for name, lines in sections.items()}
