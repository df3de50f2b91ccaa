"""``xreduce selftest``: the report, the known-answer integration, and how missing or broken parts
are told apart (``unavailable`` vs ``failed``, ``--require``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hpc import cli, selftest
from hpc.cli import main


def _checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_selftest_passes_here_and_reports_what_it_found(capsys) -> None:
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("xreduce 0.1.0 selftest\n") and "selftest passed:" in out
    assert f"numpy {np.__version__}" in out and f"h5py {h5py.__version__}" in out
    # every reduction kind checks itself; PoCL runs the OpenCL engine on the CPU (make test)
    assert "working: azint1d numpy, azint1d opencl, azint2d numpy, azint2d opencl" in out
    assert "Open MPI" in out


def test_json_report(capsys) -> None:
    assert main(["selftest", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = _checks(report)
    assert report["ok"] is True and report["image"] is None
    names = ("imports", "hdf5plugin", "azint1d numpy", "azint1d opencl", "azint2d numpy", "azint2d opencl", "mpi")
    assert [checks[n]["status"] for n in names] == ["ok"] * 7
    assert "filters: bitshuffle yes, LZ4 yes" in checks["hdf5plugin"]["detail"]
    assert "(7, 3) → the same counts in 24/24 bins" in checks["azint1d numpy"]["detail"]
    assert "(7, 3) → the same counts in 253/288 bins" in checks["azint2d numpy"]["detail"]  # a cake's corners
    assert report["facts"]["OpenCL"] and all("Portable Computing Language" in d or "(gpu," in d
                                             for d in report["facts"]["OpenCL"])
    assert report["mpi_library"].startswith("Open MPI v4.1") and "\x00" not in report["mpi_library"]
    assert report["packages"]["hdf5plugin"] and report["hdf5"] == h5py.version.hdf5_version
    assert report["seconds"] < 30


def test_require_gpu_fails_without_one(capsys) -> None:
    code = main(["selftest", "--require", "gpu", "--json"])
    report = json.loads(capsys.readouterr().out)
    gpu = _checks(report)["azint1d opencl (gpu)"]
    if any("(gpu," in d for d in report["facts"]["OpenCL"]):  # a GPU node: it must work there
        assert code == 0 and gpu["status"] == "ok"
    else:
        assert code == 1 and report["ok"] is False and gpu["status"] == "failed"
        assert "no OpenCL GPU visible" in gpu["detail"] and "(required: --require gpu)" in gpu["detail"]


def test_a_wrong_integration_is_a_failure(monkeypatch, capsys) -> None:
    from reduction import IntegrationResult, Integrator

    original = Integrator.integrate1d

    def off_by_one_percent(self, *args, **kwargs) -> IntegrationResult:
        res = original(self, *args, **kwargs)
        return IntegrationResult(**{**res.__dict__, "intensity": res.intensity * 1.01})

    monkeypatch.setattr(Integrator, "integrate1d", off_by_one_percent)
    assert main(["selftest"]) == 1
    out = capsys.readouterr().out
    assert "failed       azint1d numpy" in out
    assert "intensity differs from the flat counts (7, 3) by up to 1.00e-02" in out
    assert "selftest FAILED" in out


def test_missing_mpi_is_unavailable_unless_required(monkeypatch, capsys) -> None:
    monkeypatch.setattr(selftest, "_MPI_PROBE", "raise SystemExit('libmpi.so.40: cannot open shared object file')")
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert "unavailable  mpi" in out and "libmpi.so.40: cannot open shared object file" in out
    assert "1 unavailable" in out and "--require makes an unavailable part a failure" in out
    assert main(["selftest", "--require", "mpi"]) == 1
    assert "failed       mpi" in capsys.readouterr().out


def _selftest_without(module: str, *args: str) -> subprocess.CompletedProcess:
    """selftest in a fresh interpreter where ``module`` cannot be imported."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"from hpc.cli import main; sys.exit(main(['selftest', *{list(args)!r}]))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_without_pyopencl_opencl_is_unavailable_not_a_failure() -> None:
    done = _selftest_without("pyopencl")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unavailable  azint1d opencl" in done.stdout and "pyopencl" in done.stdout
    working = re.search(r"^working: (.*)$", done.stdout, re.MULTILINE)[1].split(", ")  # + installed kinds' checks
    assert {"azint1d numpy", "azint2d numpy", "mpi"} <= set(working) and not [w for w in working if "opencl" in w]
    required = _selftest_without("pyopencl", "--require", "opencl")
    assert required.returncode == 1 and "(required: --require opencl)" in required.stdout


def test_without_hdf5plugin_the_install_is_broken() -> None:
    done = _selftest_without("hdf5plugin")
    assert done.returncode == 1
    assert "failed       imports" in done.stdout and "cannot import hdf5plugin" in done.stdout
    assert "failed       hdf5plugin" in done.stdout


def test_cli_choices_match_and_help_lists_it(capsys) -> None:
    assert cli.REQUIRABLE == selftest.REQUIRABLE
    assert main(["--help"]) == 0
    assert "selftest" in capsys.readouterr().out
    with pytest.raises(ValueError, match="cannot require cuda"):
        selftest.run_selftest(require=["cuda"])
