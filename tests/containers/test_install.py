"""The image's install, for real, on this Debian 12: the files %files copies, installed by %post's
own containers/install.sh line (Debian's python3, a fresh venv, ``.[all]``), then the image's
%test (``xreduce selftest --require opencl --require mpi``) in that venv. Only the root paths
differ from the image (and the ICD files go to a temporary folder, not /etc)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess

import pytest
from container_helpers import CONTAINERS, REPO


def test_ci_has_the_image_packages() -> None:
    done = subprocess.run(["bash", str(CONTAINERS / "install.sh"), "--system", "image", "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}: run `make test` (it installs them)"
    assert "all image packages present" in done.stdout


@pytest.mark.slow
def test_the_image_install_steps_work_in_a_fresh_venv(definition, tmp_path) -> None:
    _, sections = definition
    source = tmp_path / "src"
    for line in filter(str.strip, sections["files"].splitlines()):
        src, _ = line.split()
        if (REPO / src).is_dir():
            shutil.copytree(REPO / src, source / src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / src, source / src)
    post = sections["post"].replace("\\\n", " ")
    (line,) = [l for l in post.splitlines() if "containers/install.sh" in l]
    words = shlex.split(line)
    image_source, venv = words[words.index("--source") + 1], words[words.index("--venv") + 1]
    local = [w.replace(image_source, str(source)).replace(venv, str(tmp_path / "venv")) for w in words]
    env = {**os.environ, "XREDUCE_ICD_DIR": str(tmp_path / "vendors"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run(local, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, f"%post's install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "vendors" / "nvidia.icd").read_text() == "libnvidia-opencl.so.1\n"

    xreduce = tmp_path / "venv" / "bin" / "xreduce"
    test_line = next(l for l in sections["test"].splitlines() if "selftest" in l)
    args = shlex.split(test_line)[1:]
    checked = subprocess.run([str(xreduce), *args, "--json"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"], checked.stdout + checked.stderr
    assert report["executable"] == str(tmp_path / "venv" / "bin" / "python")
    assert all(report["packages"][p] for p in ("mpi4py", "pyopencl", "submitit", "dask-jobqueue", "hdf5plugin"))
    assert {c["name"]: c["status"] for c in report["checks"]}["azint1d opencl"] == "ok"
    # installed as a copy: the configs and job templates travel inside the package
    installed = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                                "import hpc, pathlib; p = pathlib.Path(hpc.__file__).parent; "
                                "print((p / 'configs' / 'config.yaml').is_file(), "
                                "(p / 'jobs' / 'array.sbatch').is_file())"],
                               capture_output=True, text=True, cwd=tmp_path)
    assert installed.stdout.split() == ["True", "True"]
