"""Bitshuffle-LZ4 decompressed on the OpenCL device (reduction.azint.engines.bslz4_opencl), the
engine integrating the frames where they are, and the azint step feeding it compressed chunks.

The chunks are the real thing: written by h5py through hdf5plugin's bitshuffle filter, read back
with ``read_direct_chunk``; the reference bytes are h5py's and the ``bitshuffle`` library's. The
kernels run on PoCL here (both work-group shapes: 1 work-item per block as on CPUs, 64 as on GPUs).
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import bitshuffle
import h5py
import hdf5plugin
import numpy as np
import pytest
import scipy.sparse as sp

from reduction.azint import step as azint_step
from reduction.azint.engines import bslz4_opencl
from reduction.azint.engines.bslz4_opencl import BSLZ4Decoder, CorruptChunk, device_decompression
from reduction.azint.engines.opencl_engine import OpenCLEngine
from reduction.azint.step import AzintStep
from reduction.demo.bliss_writer import write_demo_experiment
from reduction.io import bliss
from reduction.io.direct import CompressedFrames

pytestmark = pytest.mark.opencl

GAP32 = np.iinfo(np.uint32).max
original_rescan = OpenCLEngine._rescan


@pytest.fixture(scope="module")
def queue():
    import pyopencl as cl

    from reduction.azint.engines.device import open_device

    _, dev = open_device("auto")
    ctx = cl.Context([dev])
    return cl.CommandQueue(ctx)


def chunks_of(frames: np.ndarray, block_elems: int = 0) -> tuple[list[bytes], np.ndarray]:
    """The bitshuffle-LZ4 chunks h5py + hdf5plugin write for these frames (one per frame), and
    what h5py reads back through its filter pipeline."""
    with h5py.File(io.BytesIO(), "w") as f:
        dset = f.create_dataset("x", data=frames, chunks=(1, *frames.shape[1:]),
                                **hdf5plugin.Bitshuffle(nelems=block_elems, cname="lz4"))
        raw = [dset.id.read_direct_chunk((i, *(0,) * (frames.ndim - 1)))[1] for i in range(len(frames))]
        return raw, dset[()]


def on_device(queue, chunks: list[bytes], dtype, shape, work_group: int | None = None, spare: int = 0) -> np.ndarray:
    """Decompress on the device into a buffer with ``spare`` guard bytes after the frames; return
    the frames and check the guard bytes were not touched."""
    import pyopencl as cl

    nbytes = len(chunks) * int(np.prod(shape)) * np.dtype(dtype).itemsize
    guard = np.full(nbytes + spare, 0xA5, np.uint8)
    out = cl.Buffer(queue.context, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=guard)
    try:
        BSLZ4Decoder(queue.context, queue, work_group=work_group).decompress(chunks, dtype, shape, out=out)
    finally:
        back = np.empty_like(guard)
        cl.enqueue_copy(queue, back, out)
        assert (back[nbytes:] == 0xA5).all(), "the kernels wrote past the frames"
    return back[:nbytes].view(dtype).reshape(len(chunks), *shape)


def library(raw: bytes, dtype, shape) -> np.ndarray:
    total, block = struct.unpack(">QI", raw[:12])
    return bitshuffle.decompress_lz4(np.frombuffer(raw, np.uint8, offset=12), shape, np.dtype(dtype),
                                     block // np.dtype(dtype).itemsize)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32"])
@pytest.mark.parametrize("shape", [(5, 3), (37, 29), (97, 211)])  # 15, 1073, 20467 elements: not multiples of 8
@pytest.mark.parametrize("content", ["random", "constant", "poisson"])
@pytest.mark.parametrize("work_group", [1, 64])
def test_device_bytes_equal_h5py_and_bitshuffle(queue, dtype: str, shape: tuple[int, int], content: str,
                                                work_group: int) -> None:
    rng = np.random.default_rng(sum(shape))
    info = np.iinfo(dtype)
    frames = {"random": lambda: rng.integers(info.min, info.max, (3, *shape), dtype=dtype, endpoint=True),
              "constant": lambda: np.full((3, *shape), 7, dtype),
              "poisson": lambda: rng.poisson(0.4, (3, *shape)).astype(dtype)}[content]()
    chunks, read = chunks_of(frames)
    out = on_device(queue, chunks, dtype, shape, work_group, spare=64)
    assert out.dtype == np.dtype(dtype)
    assert np.array_equal(out, read) and np.array_equal(out, frames)
    assert np.array_equal(out[1], library(chunks[1], dtype, shape))


@pytest.mark.parametrize("block_elems", [8, 1000, 4096])  # many blocks, a partial last block, one block
def test_block_sizes(queue, block_elems: int) -> None:
    frames = np.random.default_rng(1).poisson(3.0, (2, 61, 83)).astype(np.uint16)  # 5063 elements
    chunks, read = chunks_of(frames, block_elems)
    assert struct.unpack(">I", chunks[0][8:12])[0] == block_elems * 2
    for wg in (1, 64):
        assert np.array_equal(on_device(queue, chunks, np.uint16, (61, 83), wg, spare=32), read)


def test_an_eiger_like_frame_with_gaps(queue) -> None:
    """Low counts, module gaps at 2**32-1 (long runs of 0xFF in the top bit planes)."""
    from reduction.azint.detectors import detector_from_name

    det = detector_from_name("Eiger1M")
    rng = np.random.default_rng(4)
    frames = rng.poisson(0.2, (2, *det.shape)).astype(np.uint32)
    frames[:, det.mask] = GAP32
    frames[1, 100:110, 200:260] = 60000  # a hot spot
    chunks, read = chunks_of(frames)
    for wg in (1, 64):
        assert np.array_equal(on_device(queue, chunks, np.uint32, det.shape, wg, spare=8), read)


def test_a_damaged_chunk_is_named_and_nothing_is_written_out_of_bounds(queue) -> None:
    frames = np.random.default_rng(2).poisson(2.0, (3, 40, 50)).astype(np.uint32)
    chunks, _ = chunks_of(frames, 256)
    good = chunks[0]
    damaged = {
        "truncated": good[: len(good) // 2],
        "header only": good[:12],
        "short header": good[:7],
        "wrong frame size": struct.pack(">QI", 999, 1024) + good[12:],
        "odd block size": good[:8] + struct.pack(">I", 1028) + good[12:],
        "block size past the end": good[:12] + struct.pack(">I", 10**6) + good[16:],
        "trailing bytes": good + b"\0\0\0",
    }
    for what, bad in damaged.items():
        with pytest.raises(CorruptChunk, match="chunk 1 ") as info:
            on_device(queue, [chunks[0], bad, chunks[2]], np.uint32, (40, 50), spare=256)
        assert info.value.index == 1, what


@pytest.mark.parametrize("work_group", [1, 64])
def test_random_damage_never_hangs_or_overflows(queue, work_group: int) -> None:
    """Flipped bytes inside the LZ4 streams: a CorruptChunk or some frame (LZ4 has no checksum),
    never a hang, a crash or a write outside the frames."""
    frames = np.random.default_rng(3).poisson(1.0, (1, 64, 64)).astype(np.uint32)
    chunks, read = chunks_of(frames, 512)
    rng = np.random.default_rng(5)
    errors = 0
    for _ in range(60):
        raw = bytearray(chunks[0])
        for pos in rng.integers(16, len(raw), 3):
            raw[pos] = int(rng.integers(0, 256))
        try:
            on_device(queue, [bytes(raw)], np.uint32, (64, 64), work_group, spare=128)
        except CorruptChunk:
            errors += 1
    assert errors > 0


def test_device_decompression_switch() -> None:
    assert device_decompression("gpu", {}) and not device_decompression("cpu", {})
    assert device_decompression("cpu", {"XREDUCE_DEVICE_DECOMPRESSION": "1"})
    assert not device_decompression("gpu", {"XREDUCE_DEVICE_DECOMPRESSION": "0"})
    assert device_decompression("gpu", {"XREDUCE_DEVICE_DECOMPRESSION": "auto"})


# -- the engine -----------------------------------------------------------------------------------
@pytest.mark.parametrize("zero_copy", [True, False])
def test_engine_reduces_compressed_frames_bit_identically(monkeypatch: pytest.MonkeyPatch, zero_copy: bool) -> None:
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "1")
    shape = (30, 41)
    rng = np.random.default_rng(6)
    frames = rng.poisson(5.0, (11, *shape)).astype(np.uint32)
    frames[:, 7, :] = GAP32  # gaps in non-empty columns: listed as invalid entries
    frames[3, 2, 2] = GAP32
    frames[5] = GAP32  # more than a tile's list holds: the host rescans it (from the chunks, decoded there)
    matrix = sp.random(50, frames[0].size, density=0.05, format="csr", random_state=1)
    chunks, _ = chunks_of(frames)
    packed = CompressedFrames(chunks, np.dtype(np.uint32), shape)
    calls: list[int] = []
    original = BSLZ4Decoder.decompress

    def counting(self, chunks, *args, **kwargs):
        calls.append(len(chunks))
        return original(self, chunks, *args, **kwargs)

    monkeypatch.setattr(BSLZ4Decoder, "decompress", counting)
    rescans = []
    monkeypatch.setattr(OpenCLEngine, "_rescan", lambda self, *a: rescans.append(a) or original_rescan(self, *a))
    for max_frames in (None, 4):  # one launch; three launches (offsets into the block)
        engine = OpenCLEngine(matrix, device="cpu", zero_copy=zero_copy, max_frames=max_frames)
        calls.clear()
        got = engine.reduce_compressed(packed)
        assert sum(calls) == len(frames), "decompressed on the device"
        assert rescans, "an overflowing invalid list was rescanned"
        want = engine.reduce(frames.reshape(len(frames), -1))
        rescans.clear()
        assert np.array_equal(got.signal, want.signal) and np.array_equal(got.variance, want.variance)
        nonempty = np.diff(sp.csc_array(matrix).indptr) > 0
        assert np.array_equal(got.invalid, np.argwhere((frames.reshape(len(frames), -1) == GAP32) & nonempty))
        assert np.array_equal(got.invalid, want.invalid) and len(got.invalid) > 1000


def test_engine_names_the_damaged_frame_of_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "1")
    frames = np.random.default_rng(7).poisson(5.0, (6, 20, 20)).astype(np.uint16)
    chunks, _ = chunks_of(frames)
    chunks[5] = chunks[5][:-9]
    engine = OpenCLEngine(sp.random(9, 400, density=0.1, format="csr", random_state=2), device="cpu", max_frames=2)
    with pytest.raises(CorruptChunk) as info:
        engine.reduce_compressed(CompressedFrames(chunks, np.dtype(np.uint16), (20, 20)))
    assert info.value.index == 5


def test_off_by_default_on_a_cpu_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XREDUCE_DEVICE_DECOMPRESSION", raising=False)
    frames = np.random.default_rng(8).poisson(5.0, (3, 16, 16)).astype(np.int32)
    engine = OpenCLEngine(sp.random(9, 256, density=0.1, format="csr", random_state=3), device="cpu")
    assert engine.device.kind == "cpu" and not engine.device_decompression
    monkeypatch.setattr(BSLZ4Decoder, "decompress", lambda *a, **k: pytest.fail("decompressed on the CPU device"))
    got = engine.reduce_compressed(CompressedFrames(chunks_of(frames)[0], np.dtype(np.int32), (16, 16)))
    assert np.array_equal(got.signal, engine.reduce(frames.reshape(3, -1)).signal)


# -- the step, on the demo's bitshuffle-LZ4 lima files --------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return write_demo_experiment(tmp_path_factory.mktemp("demo"), n_datasets=1, n_scans=1, n_frames=13,
                                 detector="Pilatus300k", frames_per_file=5)


def reduce_chunk(demo, out: Path, kind: str = "azint1d") -> dict[str, np.ndarray]:
    cfg = {"kind": kind, "poni": str(demo.poni), "mask": str(demo.mask), "unit": "q_nm^-1", "splitting": "bbox",
           "npt": 300, "npt_rad": 100, "npt_azim": 36, "engine": "opencl", "device": "cpu", "error_model": "poisson",
           "polarization_factor": 0.99}
    chunk = {"id": "c0", "dataset": str(demo.datasets[0]), "scan": "1.1", "start": 1, "stop": 13,
             "detector": demo.detector, "monitor": demo.monitor}
    assert AzintStep(cfg)(chunk, out, config_hash="h", config_json="{}") == 12
    with h5py.File(out, "r") as f:
        return {name: f[name][()] for name in f if isinstance(f[name], h5py.Dataset) and f[name].dtype.kind == "f"}


@pytest.mark.parametrize("kind", ["azint1d", "azint2d"])
def test_step_results_bit_identical_with_device_decompression(demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              kind: str) -> None:
    monkeypatch.setattr(azint_step, "READ_BLOCK", 5)  # blocks across lima files and a short last one
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "0")
    host = reduce_chunk(demo, tmp_path / "host.h5", kind)
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "1")
    taken: list[int] = []
    original = OpenCLEngine.reduce_compressed
    monkeypatch.setattr(OpenCLEngine, "reduce_compressed",
                        lambda self, frames, **kw: taken.append(len(frames)) or original(self, frames, **kw))
    device = reduce_chunk(demo, tmp_path / "device.h5", kind)
    assert sum(taken) == 12, "every frame went to the engine compressed"
    assert "intensity" in host and host.keys() == device.keys()
    for name in host:
        assert np.array_equal(host[name], device[name], equal_nan=True), name
    assert np.isfinite(host["intensity"]).any()


def test_step_falls_back_to_the_host_for_a_chunk_the_device_refuses(demo, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "0")
    host = reduce_chunk(demo, tmp_path / "host.h5")
    monkeypatch.setenv("XREDUCE_DEVICE_DECOMPRESSION", "1")
    original = bslz4_opencl.BSLZ4Decoder.decompress

    def refuse_third(self, chunks, *args, **kwargs):
        if len(chunks) > 2:
            raise CorruptChunk(2, "refused by the test")
        return original(self, chunks, *args, **kwargs)

    monkeypatch.setattr(bslz4_opencl.BSLZ4Decoder, "decompress", refuse_third)
    with caplog.at_level("WARNING"):
        device = reduce_chunk(demo, tmp_path / "device.h5")
    assert "refused by the test; this block is decompressed on the host" in caplog.text
    assert np.array_equal(host["intensity"], device["intensity"], equal_nan=True)


def test_read_frames_compressed_gives_the_chunks_of_the_frames(demo) -> None:
    got = bliss.read_frames_compressed(demo.datasets[0], "1.1", demo.detector, 3, 12)
    assert isinstance(got, CompressedFrames) and len(got) == 9
    assert np.array_equal(got.decode(), bliss.read_frames(demo.datasets[0], "1.1", demo.detector, 3, 12))
