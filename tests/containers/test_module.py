"""The environment module, loaded with the real Lmod (Debian's lmod package), puts the wrapper on
PATH; the wrapper resolves the image and passes every argument through to ``apptainer exec``
(a stand-in recording its argv: the real Apptainer is not installable here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from container_helpers import clean_env, publish, run_lmod


@pytest.fixture()
def published(tmp_path, fake_image) -> Path:
    repo = tmp_path / "sw"
    publish(repo, "0.1.0", fake_image)
    publish(repo, "0.2.0", fake_image)
    return repo


def _env(stub, **extra: str) -> dict[str, str]:
    return clean_env(PATH=f"{stub.bin}:{os.environ['PATH']}", **extra)


def test_module_load_puts_the_wrapper_on_path_and_passes_arguments(published, apptainer_stub, tmp_path) -> None:
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    env = _env(apptainer_stub, XREDUCE_BINDS=f" {data},,{scratch}:/scratch:ro ", XREDUCE_NV="0", XREDUCE_SLURM="0")
    done = run_lmod(f"module use {published}/modulefiles; module load xreduce/0.1.0; command -v xreduce; "
                    "echo IMAGE=$XREDUCE_IMAGE; xreduce --version; xreduce plan 'campaign.name=a b' --foo", env)
    assert done.returncode != 0  # `plan` with an unknown option is a usage error of the real xreduce ...
    lines = done.stdout.splitlines()
    assert lines[0] == f"{published}/xreduce/0.1.0/bin/xreduce"
    assert lines[1] == f"IMAGE={published}/xreduce/0.1.0/xreduce.sif"
    assert lines[2].startswith("xreduce ")  # ... run through the stub by the venv's xreduce
    image = f"{published}/xreduce/0.1.0/xreduce.sif"
    binds = f"{data},{scratch}:/scratch:ro"
    assert apptainer_stub.calls() == [
        ["exec", "--bind", binds, image, "xreduce", "--version"],
        ["exec", "--bind", binds, image, "xreduce", "plan", "campaign.name=a b", "--foo"]]
    assert "unrecognized arguments: --foo" in done.stderr


def test_default_version_help_and_nv(published, apptainer_stub, tmp_path) -> None:
    env = _env(apptainer_stub, XREDUCE_NV="1", XREDUCE_SLURM="0", XREDUCE_BINDS=str(tmp_path))
    done = run_lmod(f"module use {published}/modulefiles; module load xreduce; echo V=$XREDUCE_VERSION; "
                    "module help xreduce 2>&1; xreduce selftest --json >/dev/null", env)
    assert done.returncode == 0, done.stderr
    assert "V=0.2.0" in done.stdout, "the default module is the latest published version"
    assert "xreduce selftest" in done.stdout and "XREDUCE_BINDS" in done.stdout
    assert apptainer_stub.calls() == [["exec", "--nv", "--bind", str(tmp_path),
                                       f"{published}/xreduce/0.2.0/xreduce.sif", "xreduce", "selftest", "--json"]]


def test_wrapper_binds_the_host_slurm_client(published, apptainer_stub) -> None:
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        pytest.fail("Slurm's client is not installed: run `make test` (it installs it)")
    env = _env(apptainer_stub, XREDUCE_NV="0", XREDUCE_BINDS="/tmp")
    run_lmod(f"module use {published}/modulefiles; module load xreduce/0.2.0; xreduce --version", env)
    (call,) = apptainer_stub.calls()
    binds = call[call.index("--bind") + 1].split(",")
    assert binds[0] == "/tmp"
    assert f"{Path(os.path.realpath(sbatch)).parent}:/opt/xreduce/host-slurm/bin" in binds
    assert "/etc/slurm" in binds and any("slurm" in b and b.startswith("/usr/lib") for b in binds)
    assert any(b.endswith("/munge") for b in binds)


def test_wrapper_without_apptainer_or_image_says_what_to_do(published, tmp_path) -> None:
    wrapper = published / "xreduce/0.1.0/bin/xreduce"
    done = run_lmod(f"{wrapper} --version", clean_env(PATH="/usr/bin:/bin"))
    assert done.returncode == 127 and "`apptainer` not found on PATH" in done.stderr
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    (stub_dir / "apptainer").write_text("#!/bin/sh\necho called\n")
    (stub_dir / "apptainer").chmod(0o755)
    done = run_lmod(f"{wrapper} --version", clean_env(PATH=f"{stub_dir}:/usr/bin:/bin",
                                                      XREDUCE_IMAGE=str(tmp_path / "gone.sif")))
    assert done.returncode == 1 and "no image at" in done.stderr and "called" not in done.stdout


def test_wrapper_finds_its_image_without_the_module(published, apptainer_stub) -> None:
    """Through the `latest` link, as a plain path (sites without modules)."""
    env = _env(apptainer_stub, XREDUCE_NV="0", XREDUCE_SLURM="0")
    done = run_lmod(f"{published}/xreduce/latest/bin/xreduce --version", env)
    assert done.returncode == 0, done.stderr
    (call,) = apptainer_stub.calls()
    assert call[-3:] == [f"{published}/xreduce/0.2.0/xreduce.sif", "xreduce", "--version"]
