"""OpenCLEngine: the numpy engine's numbers on an OpenCL device, and how the device is chosen.

These tests run for real: on PoCL (``pip install pyopencl pocl-binary-distribution``) on a
CPU-only machine, on the vendor's OpenCL on a GPU node.  Without pyopencl or an OpenCL device
they fail, saying how to install them.  Matrices come from a real ``Geometry`` through the
integrator (1-D and 2-D, bbox and full splitting, a detector with module gaps); both kernels
(``cpu`` and ``group``, the GPU one) run on whatever device is here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import reduction.azint.engines.device as dv
import reduction.azint.engines.opencl_engine as oe
from reduction import Geometry, Integrator
from reduction.azint.engines import NumpyEngine
from reduction.azint.engines.device import (
    Assignment,
    DeviceInfo,
    EngineUnavailable,
    GpuRecord,
    PciAddress,
    amd_gpu_table,
    assignment_from_env,
    nvidia_gpu_table,
    resolve_assignment,
    select_device,
)
from reduction.azint.engines.opencl_engine import OpenCLEngine

pytestmark = pytest.mark.opencl  # needs pyopencl and a device (PoCL here): `pytest -m "not opencl"` skips them

RTOL = 1e-5
INSTALL = ("the OpenCL engine tests need pyopencl and an OpenCL device: `pip install pyopencl "
           "pocl-binary-distribution` (PoCL runs the kernels on the CPU), or a vendor ICD on a GPU node")


def _opencl_problem() -> str | None:
    if importlib.util.find_spec("pyopencl") is None:
        return "pyopencl is not installed"
    try:
        devices = dv.list_devices()
    except EngineUnavailable as exc:
        return str(exc)
    return None if devices else "no OpenCL device found"


@pytest.fixture(scope="session")
def opencl() -> None:
    """Fail (not skip) when the OpenCL stack is missing: CI must run these tests."""
    problem = _opencl_problem()
    if problem:
        pytest.fail(f"{problem}; {INSTALL}", pytrace=False)


def test_opencl_is_installed() -> None:
    problem = _opencl_problem()
    assert problem is None, f"{problem}; {INSTALL}"


# ---------------------------------------------------------------------------------------------
# Matrices from a real geometry, frames with invalid markers
# ---------------------------------------------------------------------------------------------
GEOMETRY = Geometry(dist=0.12, poni1=0.05, poni2=0.04, rot1=0.05, rot2=-0.03, wavelength=1.0e-10,
                    detector="Pilatus300k")  # 619 x 487, two horizontal module gaps


def _matrix(dim: int, splitting: str) -> sp.csr_array:
    integ = Integrator(GEOMETRY, cache_dir=False)
    if dim == 1:
        return integ._prepare(300, None, "q_nm^-1", splitting, None, None).matrix
    return integ._prepare(120, 72, "2th_deg", splitting, None, None).matrix


MATRICES: dict[tuple[int, str], sp.csr_array] = {}


def matrix(dim: int = 1, splitting: str = "bbox") -> sp.csr_array:
    key = (dim, splitting)
    if key not in MATRICES:
        MATRICES[key] = _matrix(dim, splitting)
    return MATRICES[key]


def frames_for(w: sp.csr_array, nframes: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Poisson counts with invalid markers in used pixels and garbage in masked ones."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    x = rng.poisson(30.0, size=(nframes, w.shape[1])).astype(np.float64)
    if dt.kind == "f":
        x += rng.random(x.shape) - 0.4  # fractions, values below 1 and negative ones
        bad = [np.nan, np.inf, -np.inf]
    else:
        bad = [np.iinfo(dt).max] + ([-1, -2] if dt.kind == "i" else [])
    out = x.astype(dt)
    used = np.flatnonzero(np.diff(sp.csc_array(w).indptr) > 0)
    unused = np.setdiff1d(np.arange(w.shape[1]), used)
    for k in range(3 * nframes + 2):
        out[rng.integers(nframes), rng.choice(used)] = bad[k % len(bad)]
    out[:, unused] = bad[0]  # gaps hold the marker, as detectors write them
    return out


def assert_same(out, ref, variance: bool = True) -> None:
    """OpenCL output == numpy engine output (1e-5 relative, exact invalid list)."""
    def close(a, b, what):
        scale = np.maximum(np.abs(b), 1e-9 * max(1.0, float(np.abs(b).max())))
        err = float(np.max(np.abs(a - b) / scale)) if a.size else 0.0
        assert err <= RTOL, f"{what}: max relative error {err:.2e} > {RTOL:.0e}"

    assert out.signal.shape == ref.signal.shape and out.signal.dtype == np.float64
    close(out.signal, ref.signal, "signal")
    if variance:
        assert out.variance.dtype == np.float64
        close(out.variance, ref.variance, "variance")
    else:
        assert out.variance is None
    assert out.invalid.dtype == np.int64 and out.invalid.shape[1] == 2
    np.testing.assert_array_equal(out.invalid, ref.invalid)


ENGINES: dict[tuple, OpenCLEngine] = {}


def engine(dim: int = 1, splitting: str = "bbox", kernel: str = "auto", **kwargs) -> OpenCLEngine:
    """Engines are cached per configuration (building one costs a layout and a self-test)."""
    key = (dim, splitting, kernel, tuple(sorted(kwargs.items())))
    if key not in ENGINES:
        ENGINES[key] = OpenCLEngine(matrix(dim, splitting), device="cpu" if kernel == "cpu" else None,
                                    kernel=kernel, **kwargs)
    return ENGINES[key]


# ---------------------------------------------------------------------------------------------
# Parity with the numpy engine
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int32", "float32", "float64"])
@pytest.mark.parametrize("nframes", [1, 32, 33])
@pytest.mark.parametrize("kernel", ["cpu", "group"])
def test_parity_1d_bbox(opencl, dtype, nframes, kernel) -> None:
    w = matrix(1, "bbox")
    frames = frames_for(w, nframes, dtype, seed=nframes)
    assert_same(engine(1, "bbox", kernel).reduce(frames), NumpyEngine(w).reduce(frames))


@pytest.mark.parametrize("dim,splitting", [(1, "no"), (1, "full"), (2, "bbox"), (2, "full")])
@pytest.mark.parametrize("variance", [True, False])
@pytest.mark.parametrize("kernel", ["cpu", "group"])
def test_parity_other_matrices(opencl, dim, splitting, variance, kernel) -> None:
    w = matrix(dim, splitting)
    frames = frames_for(w, 20, "uint32", seed=dim)
    out = engine(dim, splitting, kernel).reduce(frames, variance=variance)
    assert_same(out, NumpyEngine(w).reduce(frames, variance=variance), variance)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "uint64", "float16", ">u4"])
def test_other_dtypes(opencl, dtype) -> None:
    w = matrix(1, "bbox")
    frames = frames_for(w, 9, dtype)
    assert_same(engine(1, "bbox").reduce(frames), NumpyEngine(w).reduce(frames))


def test_single_frame_and_shapes(opencl) -> None:
    w = matrix(1, "bbox")
    eng = engine(1, "bbox")
    frame = frames_for(w, 1, "uint32")[0]
    ref = NumpyEngine(w).reduce(frame[None])
    assert_same(eng.reduce(frame), ref)  # (npix,) is one frame
    assert_same(eng.reduce(frame.reshape(1, 619, 487)), ref)  # (B, ny, nx)
    assert_same(eng.reduce(np.asfortranarray(np.repeat(frame[None], 3, 0))[:1]), ref)
    empty = eng.reduce(np.zeros((0, w.shape[1]), np.uint32))
    assert empty.signal.shape == (0, w.shape[0]) and empty.invalid.shape == (0, 2)
    with pytest.raises(ValueError, match="frames must have shape"):
        eng.reduce(frame[:-1])
    with pytest.raises(TypeError, match="unsupported frame dtype"):
        eng.reduce(frame.astype(bool))


@pytest.fixture
def tiny_tiles(monkeypatch):
    """Tiles of a few dozen pixels and invalid lists of one entry: many tiles, overflowing lists."""
    monkeypatch.setattr(oe, "_CPU_RUN", 16)
    monkeypatch.setattr(oe, "_CPU_TILE_NNZ", (300, 300))
    monkeypatch.setattr(oe, "_GROUP_RUN", 16)
    monkeypatch.setattr(oe, "_GROUP_PMAX", 64)
    monkeypatch.setattr(oe, "_CAP", 1)
    monkeypatch.setattr(oe, "_CAP_FRACTION", 0.0)
    monkeypatch.setenv("XREDUCE_OPENCL_PROBE", "0")  # the probe child would not see these settings


@pytest.mark.parametrize("kernel", ["cpu", "group"])
@pytest.mark.parametrize("zero_copy", [True, False])
def test_many_tiles_launches_and_copies(opencl, tiny_tiles, kernel, zero_copy) -> None:
    """Tiny tiles, list overflows (host rescans), 5 frames per launch, and the discrete-GPU path
    (device copies, two frame buffers alternating) even on a host-memory device."""
    w = matrix(2, "bbox")
    eng = OpenCLEngine(w, kernel=kernel, max_frames=5, zero_copy=zero_copy)
    assert eng.layout.ntiles > 100
    frames = frames_for(w, 23, "int32", seed=3)
    frames[4, :5000] = -1  # a burst of markers: many per tile
    assert_same(eng.reduce(frames), NumpyEngine(w).reduce(frames))
    assert_same(eng.reduce(frames[:3], variance=False), NumpyEngine(w).reduce(frames[:3], variance=False), False)


def test_weight_precision_policy(opencl) -> None:
    """float32 weights only where no sum can cancel: integer frames and non-negative weights."""
    eng = engine(1, "bbox")
    assert eng._kernels(np.dtype("uint16"))["weights"] == "w32"
    assert eng._kernels(np.dtype("float32"))["weights"] == "w64"
    w = matrix(2, "full")
    assert (w.data < 0).any()  # pyFAI's 2-D full splitting has negative fractions: cancellation
    eng = engine(2, "full")
    assert eng._kernels(np.dtype("uint32"))["weights"] == "w64"
    frames = frames_for(w, 5, "uint32")
    np.testing.assert_allclose(eng.reduce(frames).signal, NumpyEngine(w, precision="double").reduce(frames).signal,
                               rtol=1e-12, atol=1e-9)


def test_layout_invariants() -> None:
    """Every non-zero lands in exactly one tile and slot; slots map back to their bins."""
    w = sp.csc_array(matrix(2, "full"))
    w.sort_indices()
    for sort, group in ((False, False), (True, True)):
        lay = oe.build_layout(w, run=32, tile_nnz=5000, tile_pixels=256 if sort else 1 << 30, sort=sort,
                              group_order=group)
        assert np.array_equal(np.sort(lay.pos_pix), np.flatnonzero(np.diff(w.indptr) > 0))
        assert lay.pos_ptr[-1] == w.nnz and len(lay.ent_slot) == w.nnz
        slot_bin = np.repeat(np.arange(w.shape[0]), np.diff(lay.bin_ptr))[np.argsort(lay.bin_slot)]
        rebuilt = sp.csc_array((lay.ent_w.astype(np.float64),
                                (slot_bin[lay.ent_slot], np.repeat(lay.pos_pix, np.diff(lay.pos_ptr)))),
                               shape=w.shape)
        assert abs(rebuilt - w).max() <= 1e-7 * w.max() and rebuilt.nnz == w.nnz
        if group:
            assert np.diff(lay.tile_pos).max() <= 256 and lay.slot_ptr[-1] == w.nnz


# ---------------------------------------------------------------------------------------------
# Through the integrator: pyFAI agreement with the OpenCL engine plugged in
# ---------------------------------------------------------------------------------------------
def _agreement_cases():
    spec = importlib.util.spec_from_file_location("_agreement", Path(__file__).with_name("test_pyfai_agreement.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    cases = [c for c in module.GRID if c.unit in ("q_nm^-1", "2th_deg")] + module.BIG
    return module, cases


AGREEMENT, AGREEMENT_CASES = _agreement_cases()


def _case_id(c) -> str:
    return f"{c.detector if isinstance(c.detector, str) else 'small'}-{c.unit}-{c.splitting}-{c.dim}d"


@pytest.mark.parametrize("case", AGREEMENT_CASES, ids=_case_id)
def test_pyfai_agreement_with_opencl_engine(opencl, case) -> None:
    AGREEMENT.check_case(case, engine="opencl")


def test_integrator_engines_agree(opencl) -> None:
    frames = frames_for(matrix(1, "bbox"), 3, "uint32").reshape(3, 619, 487)
    results = {}
    for name in ("opencl", "auto", "numpy"):
        integ = Integrator(GEOMETRY, engine=name, cache_dir=False)
        results[name] = integ.integrate1d(frames, npt=300, unit="q_nm^-1")
        assert integ.engine_used == ("numpy" if name == "numpy" else "opencl")
        assert isinstance(next(iter(integ._prepared.values())).engine,
                          NumpyEngine if name == "numpy" else OpenCLEngine)
    expected = results.pop("numpy")
    for res in results.values():
        np.testing.assert_allclose(res.intensity, expected.intensity, rtol=RTOL)
        np.testing.assert_allclose(res.sigma, expected.sigma, rtol=RTOL)
        np.testing.assert_allclose(res.count, expected.count, rtol=1e-12)  # invalid pixels dropped alike


def test_auto_falls_back_to_numpy_with_the_reason(opencl, monkeypatch, caplog) -> None:
    """No device (here: pyopencl hidden): ``auto`` runs numpy and warns why; ``opencl`` raises."""
    monkeypatch.setitem(sys.modules, "pyopencl", None)
    monkeypatch.setattr("reduction.azint.integrator._LOGGED", set())
    frames = frames_for(matrix(1, "bbox"), 2, "uint16").reshape(2, 619, 487)
    integ = Integrator(GEOMETRY, engine="auto", cache_dir=False)
    with caplog.at_level("WARNING", logger="reduction.azint.integrator"):
        res = integ.integrate1d(frames, npt=300)
    assert integ.engine_used == "numpy"
    assert "using the numpy engine, the OpenCL engine is unavailable: pyopencl is not installed" in caplog.text
    expected = Integrator(GEOMETRY, engine="numpy", cache_dir=False).integrate1d(frames, npt=300)
    np.testing.assert_array_equal(res.intensity, expected.intensity)
    with pytest.raises(EngineUnavailable, match="pyopencl is not installed"):
        Integrator(GEOMETRY, engine="opencl", cache_dir=False).integrate1d(frames, npt=300)


def test_auto_falls_back_mid_run(opencl, monkeypatch, caplog) -> None:
    """A device that fails during a run (lost, out of memory for one frame): under ``auto`` the
    block is redone with numpy, and so is the rest; under ``opencl`` the failure is raised."""
    monkeypatch.setattr("reduction.azint.integrator._LOGGED", set())
    frames = frames_for(matrix(1, "bbox"), 40, "int32").reshape(40, 619, 487)

    def lost(self, frames, *, variance=True):
        raise EngineUnavailable("OpenCL failure on fake device: DEVICE_NOT_AVAILABLE")

    expected = Integrator(GEOMETRY, engine="numpy", cache_dir=False).integrate1d(frames, npt=300)
    auto = Integrator(GEOMETRY, engine="auto", cache_dir=False)
    auto.integrate1d(frames[:1], npt=300)  # an OpenCL engine is prepared
    assert auto.engine_used == "opencl"
    monkeypatch.setattr(OpenCLEngine, "reduce", lost)
    with caplog.at_level("WARNING", logger="reduction.azint.integrator"):
        res = auto.integrate1d(frames, npt=300)
    assert auto.engine_used == "numpy" and "DEVICE_NOT_AVAILABLE" in caplog.text
    np.testing.assert_array_equal(res.intensity, expected.intensity)
    explicit = Integrator(GEOMETRY, engine="opencl", cache_dir=False)
    with pytest.raises(EngineUnavailable, match="DEVICE_NOT_AVAILABLE"):
        explicit.integrate1d(frames, npt=300)


# ---------------------------------------------------------------------------------------------
# Failures: clear EngineUnavailable, so the integrator can fall back
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def no_probe(monkeypatch):
    """In-process only: the probe's child process would read the real kernel file."""
    monkeypatch.setenv("XREDUCE_OPENCL_PROBE", "0")


def test_bad_kernel_source(opencl, no_probe, monkeypatch) -> None:
    monkeypatch.setattr(oe, "_kernel_source", lambda: "__kernel void combine(__global int *x) { x[0] = ; }")
    with pytest.raises(EngineUnavailable, match="kernel build failed"):
        OpenCLEngine(matrix(1, "bbox"))


def test_kernel_file_missing(opencl, no_probe, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(oe, "_KERNEL_FILE", tmp_path / "missing.cl")
    with pytest.raises(EngineUnavailable, match=r"\*\.cl data files"):
        OpenCLEngine(matrix(1, "bbox"))


def test_wrong_numbers_are_refused(opencl, no_probe, monkeypatch) -> None:
    """The self-test catches kernels that build but compute wrong sums."""
    source = oe._kernel_source().replace("s += part[base];", "s += 1.001 * part[base];")
    monkeypatch.setattr(oe, "_kernel_source", lambda: source)
    with pytest.raises(EngineUnavailable, match="wrong results"):
        OpenCLEngine(matrix(1, "bbox"))


def test_probe_process(opencl, monkeypatch, tmp_path) -> None:
    """Kernels are first built and self-tested in a child process (a compiler crash there costs a
    fallback, not the worker); success is remembered in the cache, a crash is reported."""
    monkeypatch.setenv("XREDUCE_CACHE_DIR", str(tmp_path))
    OpenCLEngine(matrix(1, "bbox"))
    assert len(list((tmp_path / "opencl" / "probed").iterdir())) == 1
    OpenCLEngine(matrix(1, "bbox"))  # remembered: no second probe
    assert len(list((tmp_path / "opencl" / "probed").iterdir())) == 1

    def crashed(*args, **kwargs):
        return subprocess.CompletedProcess(args, -6, "", "LLVM ERROR: Cannot emit physreg copy instruction")

    monkeypatch.setenv("XREDUCE_CACHE_DIR", str(tmp_path / "fresh"))
    monkeypatch.setattr("reduction.io.process.subprocess.run", crashed)
    with pytest.raises(EngineUnavailable, match="probe process \\(exit code -6\\): LLVM ERROR"):
        OpenCLEngine(matrix(1, "bbox"))


def test_no_platform(monkeypatch) -> None:
    import pyopencl as cl

    def no_icd():
        raise cl.LogicError(cl._cl._ErrorRecord("clGetPlatformIDs", -1001, "PLATFORM_NOT_FOUND_KHR"))

    monkeypatch.setattr(cl, "get_platforms", no_icd)
    with pytest.raises(EngineUnavailable, match="no OpenCL platform.*pip install pyopencl"):
        OpenCLEngine(matrix(1, "bbox"))
    monkeypatch.setattr(cl, "get_platforms", lambda: [])
    with pytest.raises(EngineUnavailable, match="no OpenCL device"):
        OpenCLEngine(matrix(1, "bbox"))


def test_no_pyopencl(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyopencl", None)
    with pytest.raises(EngineUnavailable, match="pyopencl is not installed.*pocl-binary-distribution"):
        OpenCLEngine(matrix(1, "bbox"))


def test_no_fp64_and_too_little_memory(opencl, monkeypatch) -> None:
    real = dv.open_device

    def without_fp64(request=None, env=None):
        info, dev = real(request, env)
        return DeviceInfo(**{**info.__dict__, "fp64": False}), dev

    monkeypatch.setattr(oe, "open_device", without_fp64)
    with pytest.raises(EngineUnavailable, match="no float64"):
        OpenCLEngine(matrix(1, "bbox"))
    monkeypatch.setattr(oe, "open_device", real)
    monkeypatch.setattr(oe, "_MEM_FRACTION", 1e-6)
    with pytest.raises(EngineUnavailable, match="needs .* MiB"):
        OpenCLEngine(matrix(1, "bbox"))


def test_block_shrinks_to_fit_and_on_out_of_memory(opencl, monkeypatch) -> None:
    w = matrix(1, "bbox")
    eng = OpenCLEngine(w, zero_copy=False)
    assert eng._launch_size(32, 4) == 16  # halves: double buffering on discrete devices
    eng._mem_budget = eng.layout_bytes() + eng._launch_bytes(5, 4, 32)
    assert eng._launch_size(32, 4) <= 5  # reduced to what fits, not crashed
    import pyopencl as cl

    calls = []
    real_run = eng._run

    def failing_run(kernels, mat, frames, signal, var_out, step):
        calls.append(step)
        if step > 2:
            raise cl.MemoryError(cl._cl._ErrorRecord("clEnqueueNDRangeKernel",
                                                     cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, "fake"))
        return real_run(kernels, mat, frames, signal, var_out, step)

    monkeypatch.setattr(eng, "_run", failing_run)
    eng._mem_budget = 1 << 40
    frames = frames_for(w, 8, "uint32")
    assert_same(eng.reduce(frames), NumpyEngine(w).reduce(frames))
    assert calls == [8, 4, 2] and eng._max_frames == 2

    def always_failing(*args):
        raise cl.MemoryError(cl._cl._ErrorRecord("clEnqueueNDRangeKernel",
                                                 cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, "fake"))

    monkeypatch.setattr(eng, "_run", always_failing)
    with pytest.raises(EngineUnavailable, match="OpenCL failure.*1 frames per launch"):
        eng.reduce(frames)


CHILD = """
import sys, time
import numpy as np, scipy.sparse as sp
from reduction.azint.engines.opencl_engine import OpenCLEngine
w = sp.random(50, 2000, density=0.01, format="csr", random_state=0)
t0 = time.perf_counter()
OpenCLEngine(w).reduce(np.ones((32, 2000), np.uint16))
print(time.perf_counter() - t0)
"""


def test_binary_cache_across_processes(opencl, tmp_path) -> None:
    """A second process finds the kernels compiled by the first (the ICD's cache -- PoCL's and
    NVIDIA's, which pyopencl defers to -- or pyopencl's under $XREDUCE_CACHE_DIR/opencl)."""
    env = {**os.environ, "POCL_CACHE_DIR": str(tmp_path / "pocl"), "XREDUCE_CACHE_DIR": str(tmp_path / "xreduce"),
           "PYTHONPATH": str(Path(oe.__file__).parents[2])}
    times = [float(subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for _ in range(2)]
    assert any(tmp_path.rglob("*")), "nothing cached"
    assert times[1] < 0.5 * times[0], f"second process rebuilt its kernels: {times}"


def test_threads_make_a_sub_device(opencl) -> None:
    eng = OpenCLEngine(matrix(1, "bbox"), device="cpu", threads=1)
    w = matrix(1, "bbox")
    frames = frames_for(w, 4, "uint16")
    assert_same(eng.reduce(frames), NumpyEngine(w).reduce(frames))


@pytest.mark.parametrize("dim", [1, 2])
def test_same_bits_for_any_compute_unit_count(opencl, dim) -> None:
    """On a CPU device restricted to 1 or 2 compute units (what ``threads``, i.e. XREDUCE_THREADS,
    asks for), the tiling and hence the order of every sum are the same: bit-identical outputs."""
    w = matrix(dim, "bbox")
    frames = frames_for(w, 33, "uint32", seed=3)
    engines = [OpenCLEngine(w, device="cpu", kernel="cpu", threads=n) for n in (1, 2)]
    units = [e._dev.max_compute_units for e in engines]
    assert units == [1, 2], f"compute units of the engines: {units}"
    assert engines[0].layout.ntiles > 1
    one, two = (e.reduce(frames) for e in engines)
    assert one.signal.tobytes() == two.signal.tobytes()
    assert one.variance.tobytes() == two.variance.tobytes()
    np.testing.assert_array_equal(one.invalid, two.invalid)


# ---------------------------------------------------------------------------------------------
# Device selection (pure: fake devices, fake environment, fake driver tables)
# ---------------------------------------------------------------------------------------------
def _pci(text: str) -> PciAddress:
    return PciAddress.parse(text)


NV = "NVIDIA CUDA"
FAKE = [
    DeviceInfo(0, 0, "Portable Computing Language", "pthread-cpu", "cpu"),
    DeviceInfo(1, 0, NV, "NVIDIA H100", "gpu", _pci("0000:1b:00.0")),
    DeviceInfo(1, 1, NV, "NVIDIA H100", "gpu", _pci("0000:43:00.0")),
    DeviceInfo(1, 2, NV, "NVIDIA H100", "gpu", _pci("0000:52:00.0")),
    DeviceInfo(1, 3, NV, "NVIDIA H100", "gpu", _pci("0000:9d:00.0")),
]
TABLE = [GpuRecord(0, _pci("0000:1b:00.0"), "GPU-aaaa1111"), GpuRecord(1, _pci("0000:43:00.0"), "GPU-bbbb2222"),
         GpuRecord(3, _pci("0000:9d:00.0"), "GPU-dddd4444"), GpuRecord(2, _pci("0000:52:00.0"), "GPU-cccc3333")]


def choose(env: dict, request: str = "auto", devices=FAKE, table=TABLE) -> DeviceInfo:
    assignment = assignment_from_env(env)
    pci = resolve_assignment(assignment, table) if assignment else None
    return select_device(devices, request, assignment=assignment, assigned_pci=pci)


def test_requests_without_batch_system() -> None:
    assert choose({}).index == "1:0"  # auto: a GPU first
    assert choose({}, "gpu").index == "1:0"
    assert choose({}, "cpu").index == "0:0"
    assert choose({}, "1:3").index == "1:3"
    assert choose({}, "auto", FAKE[:1]).index == "0:0"  # no GPU: the CPU
    with pytest.raises(EngineUnavailable, match="no OpenCL GPU"):
        choose({}, "gpu", FAKE[:1])
    with pytest.raises(EngineUnavailable, match="no OpenCL CPU"):
        choose({}, "cpu", FAKE[1:])
    with pytest.raises(EngineUnavailable, match="no OpenCL device 2:0"):
        choose({}, "2:0")
    with pytest.raises(EngineUnavailable, match="no OpenCL device found"):
        choose({}, "auto", [])
    for bad in ("GPU0", "1", "0:x", "cuda"):
        with pytest.raises(Exception, match="platform:device"):
            choose({}, bad)


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_JOB_GPUS": "2"}, "1:2"),  # a node-global index (minor number), not "the third GPU"
    ({"SLURM_JOB_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}, "1:3"),  # Slurm's renumbered CUDA index ignored
    ({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "0,1"}, "1:1"),  # the step's GPU
    ({"SLURM_JOB_GPUS": "3,1"}, "1:3"),  # several: the first assigned
    ({"CUDA_VISIBLE_DEVICES": "1"}, "1:1"),  # CUDA index, PCI-bus order
    ({"CUDA_VISIBLE_DEVICES": "GPU-cccc3333"}, "1:2"),  # a UUID
    ({"CUDA_VISIBLE_DEVICES": "GPU-dddd"}, "1:3"),  # a UUID prefix, as CUDA accepts
])
def test_slurm_assigned_gpu_by_pci(env, expected) -> None:
    assert choose(env).index == expected
    assert choose(env, "gpu").index == expected
    assert choose(env, "cpu").index == "0:0"  # asking for the CPU ignores the GPU assignment


def test_amd_rocr_visible_devices() -> None:
    amd = [DeviceInfo(0, 0, "AMD Accelerated Parallel Processing", "gfx90a", "gpu", PciAddress(None, 0xc1, 0, 0)),
           DeviceInfo(0, 1, "AMD Accelerated Parallel Processing", "gfx90a", "gpu", PciAddress(None, 0xd1, 0, 0))]
    table = [GpuRecord(0, _pci("0000:c1:00.0")), GpuRecord(1, _pci("0000:d1:00.0"))]
    assert choose({"ROCR_VISIBLE_DEVICES": "1"}, devices=amd, table=table).index == "0:1"


def test_unverifiable_assignment() -> None:
    """Without PCI ids: one visible GPU is taken (cgroups hide the others); several are refused."""
    anonymous = [DeviceInfo(1, i, NV, "GPU", "gpu") for i in range(2)]
    with pytest.raises(EngineUnavailable, match="SLURM_JOB_GPUS=1: .*refusing to guess"):
        choose({"SLURM_JOB_GPUS": "1"}, devices=anonymous)
    assert choose({"SLURM_JOB_GPUS": "1"}, devices=anonymous[:1]).index == "1:0"
    with pytest.raises(EngineUnavailable, match="refusing to guess"):  # no driver table either
        choose({"SLURM_JOB_GPUS": "1"}, table=[])
    assert choose({"SLURM_JOB_GPUS": "0"}, devices=FAKE[:2], table=[]).index == "1:0"


def test_assignment_not_visible_or_empty() -> None:
    with pytest.raises(EngineUnavailable, match="PCI 0000:52:00.0, which no visible OpenCL GPU has"):
        choose({"SLURM_JOB_GPUS": "2"}, devices=FAKE[:2])
    with pytest.raises(EngineUnavailable, match="assigned no GPU"):
        choose({"CUDA_VISIBLE_DEVICES": ""})
    with pytest.raises(EngineUnavailable, match="refusing to guess"):  # an index beyond the table
        choose({"SLURM_JOB_GPUS": "7"})
    # GPUs assigned but no OpenCL GPU (no vendor ICD in the container): auto runs on the CPU
    assert choose({"SLURM_JOB_GPUS": "0"}, devices=FAKE[:1]).index == "0:0"
    with pytest.raises(EngineUnavailable, match="no OpenCL GPU.*SLURM_JOB_GPUS=0"):
        choose({"SLURM_JOB_GPUS": "0"}, "gpu", devices=FAKE[:1])


def test_pci_addresses() -> None:
    assert PciAddress.parse("00000000:1B:00.0") == PciAddress(0, 0x1B, 0, 0)  # nvidia-smi's 8-digit domain
    assert PciAddress.parse("1b:00.1") == PciAddress(None, 0x1B, 0, 1)
    assert PciAddress(None, 0x1B, 0, 0).matches(_pci("0001:1b:00.0"))  # unknown domain: bus/dev/fn decide
    assert not _pci("0001:1b:00.0").matches(_pci("0000:1b:00.0"))
    assert str(_pci("0000:1b:00.0")) == "0000:1b:00.0"
    with pytest.raises(ValueError):
        PciAddress.parse("GPU-1234")


def test_driver_tables(tmp_path) -> None:
    nv = tmp_path / "nvidia"
    for minor, bus, uuid in ((1, "0000:43:00.0", "GPU-bbbb"), (0, "0000:1b:00.0", "GPU-aaaa")):
        (nv / bus).mkdir(parents=True)
        (nv / bus / "information").write_text(
            f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 123\nGPU UUID: \t {uuid}\nVideo BIOS: \t ??\n"
            f"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n")
    table = nvidia_gpu_table(nv)
    assert [(r.index, str(r.pci), r.uuid) for r in table] == [(0, "0000:1b:00.0", "GPU-aaaa"),
                                                             (1, "0000:43:00.0", "GPU-bbbb")]
    assert nvidia_gpu_table(tmp_path / "absent") == []
    kfd = tmp_path / "kfd"
    for node, props in ((0, "cpu_cores_count 64\nsimd_count 0\n"),
                        (1, "simd_count 440\nlocation_id 49408\ndomain 0\nunique_id 1234\n"),  # c1:00.0
                        (2, "simd_count 440\nlocation_id 53504\ndomain 0\nunique_id 5678\n")):  # d1:00.0
        (kfd / str(node)).mkdir(parents=True)
        (kfd / str(node) / "properties").write_text(props)
    amd = amd_gpu_table(kfd)
    assert [(r.index, str(r.pci)) for r in amd] == [(0, "0000:c1:00.0"), (1, "0000:d1:00.0")]
    assert resolve_assignment(Assignment("ROCR_VISIBLE_DEVICES", ("1",)), amd) == [_pci("0000:d1:00.0")]


def test_open_device_on_this_machine(opencl) -> None:
    """The real listing: the chosen device is one pyopencl reports, and the environment is read."""
    info, dev = dv.open_device("auto", env={})
    assert info.name == dev.name.strip()
    info_cpu, _ = dv.open_device("cpu", env={"SLURM_JOB_GPUS": "0"})
    assert info_cpu.kind == "cpu" or not any(i.kind == "cpu" for i, _ in dv.list_devices())


@pytest.mark.parametrize("kernel", ["cpu", "group"])
def test_the_tile_layout_is_kept_beside_the_cached_matrix(opencl, monkeypatch, tmp_path, kernel, caplog) -> None:
    """A second process (here: a second integrator) loads the layout instead of cutting the matrix
    into tiles again; a damaged layout file is rebuilt, never trusted; the numbers do not change."""
    monkeypatch.setenv("XREDUCE_CACHE_DIR", str(tmp_path / "kernels"))
    rng = np.random.default_rng(5)
    frames = rng.poisson(20.0, (3, *GEOMETRY.shape)).astype(np.uint32)

    def integrate() -> np.ndarray:
        integ = Integrator(GEOMETRY, engine="opencl", device="cpu", cache_dir=tmp_path / "cache")
        original = oe.OpenCLEngine.__init__

        def with_kernel(self, matrix, **kwargs):
            original(self, matrix, **{**kwargs, "kernel": kernel})

        monkeypatch.setattr(oe.OpenCLEngine, "__init__", with_kernel)
        try:
            return integ.integrate1d(frames, npt=300, unit="2th_deg").intensity
        finally:
            monkeypatch.setattr(oe.OpenCLEngine, "__init__", original)

    first = integrate()
    (layout,) = (tmp_path / "cache").glob(f"*.opencl-{kernel}-*.npz")

    build = oe.build_layout

    def no_rebuild(matrix, **kwargs):
        if matrix.shape[1] == frames[0].size:  # the campaign's matrix (the self-test's is tiny)
            raise AssertionError("the layout was cut again")
        return build(matrix, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(oe, "build_layout", no_rebuild)
        np.testing.assert_array_equal(integrate(), first)
    layout.write_bytes(layout.read_bytes()[:-100])  # truncated: rebuilt, with a warning
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(integrate(), first)
    assert "ignoring unusable matrix cache file" in caplog.text and str(layout) in caplog.text
