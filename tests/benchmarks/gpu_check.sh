#!/usr/bin/env bash
# gpu_check.sh - the OpenCL engine on an NVIDIA GPU node: its tests, then the benchmark.
#
#   bash tests/benchmarks/gpu_check.sh wheels   # on a machine with PyPI: fetch what a bare GPU node lacks
#                                               # into .whl/ (x86-64, CPython 3.12; git-ignored, < 64 MiB)
#   bash tests/benchmarks/gpu_check.sh run      # on the GPU node, from the checkout (with .whl/ beside it)
#
# `run` installs the wheels into /tmp/site (no index needed), makes the NVIDIA OpenCL driver visible
# to pyopencl's ICD loader (OCL_ICD_FILENAMES, additive: never OCL_ICD_VENDORS, which hides the pip
# PoCL), lists the OpenCL devices, runs the OpenCL engine tests (device "auto" takes the GPU first),
# then the benchmark for Eiger4M and Pilatus1M with --device gpu, then device decompression
# (bitshuffle-LZ4 on the GPU): its parity tests, its rate beside the CPU's and xreduce end to end
# with it on (the GPU default) and off (bench_e2e.py), then the XPCS correlator: its OpenCL tests and
# bench_xpcs.py --device gpu (numpy and OpenCL, from memory and from a BLISS scan). The decompression
# and xpcs benchmarks need h5py, hdf5plugin and bitshuffle: `WHEELS_EXTRA="hdf5plugin bitshuffle" ...
# wheels` adds them (~56 MB: mind the 64 MiB). Logs go to $OUT (or ./gpu_check_out). About 8-12 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."

WHEELS=(pyopencl pytools platformdirs siphash24 pyFAI fabio silx numexpr)  # no hdf5plugin: 45 MB, see WHEELS_EXTRA
read -r -a EXTRA <<<"${WHEELS_EXTRA:-}"  # e.g. "hdf5plugin bitshuffle": device decompression's tests and benchmark

fetch() {
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
  mkdir -p .whl
  for name in "${WHEELS[@]}" "${EXTRA[@]}"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "$name"
  done
  du -sh .whl
}

run() {
  local out=${OUT:-gpu_check_out}
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  if [ -z "${OCL_ICD_FILENAMES:-}" ] && [ ! -e /etc/OpenCL/vendors/nvidia.icd ]; then
    lib=$(find /usr/local/nvidia /usr/lib /usr/lib64 -name 'libnvidia-opencl.so*' 2>/dev/null | head -n1 || true)
    [ -n "$lib" ] && export OCL_ICD_FILENAMES=$lib
  fi
  nvidia-smi --query-gpu=name,pci.bus_id,memory.total --format=csv | tee "$out/nvidia-smi.txt"
  python3 -c 'from reduction.azint.engines.device import list_devices; [print(i) for i, _ in list_devices()]' \
    | tee "$out/devices.txt"
  python3 -m pytest -q -p no:cacheprovider tests/reduction/test_opencl_engine.py 2>&1 | tee "$out/tests.txt" || true
  python3 tests/benchmarks/bench_integrate.py --device gpu 2>&1 | tee "$out/bench_eiger4m.txt"
  python3 tests/benchmarks/bench_integrate.py --device gpu --detector Pilatus1M --frames 64 2>&1 \
    | tee "$out/bench_pilatus1m.txt"
  # device decompression: parity on the GPU, then decompression rates (CPU threads vs the GPU) and
  # xreduce run end to end with XREDUCE_DEVICE_DECOMPRESSION on (the GPU default) and =0
  if python3 -c 'import h5py, hdf5plugin, bitshuffle' 2>"$out/decompression_missing.txt"; then
    python3 -m pytest -q -p no:cacheprovider tests/reduction/test_bslz4_opencl.py 2>&1 \
      | tee "$out/tests_bslz4.txt" || true
    python3 tests/benchmarks/bench_e2e.py --engines opencl --skip-pyfai --frames 96 --rounds 2 --repeats 2 \
      --workdir "${TMPDIR:-/tmp}" 2>&1 | tee "$out/bench_e2e_gpu.txt"
  else
    echo "device decompression not measured: $(tail -n1 "$out/decompression_missing.txt")" \
      "(fetch with WHEELS_EXTRA=\"hdf5plugin bitshuffle\" bash $0 wheels)" | tee "$out/bench_e2e_gpu.txt"
  fi
  # xpcs: the OpenCL correlator's tests on the GPU (against numpy), then frames/s of both correlators
  # from memory and from a bitshuffle-LZ4 BLISS scan (256x256 x 10000 frames; needs hdf5plugin)
  python3 -m pytest -q -p no:cacheprovider tests/reduction/test_xpcs_opencl.py 2>&1 | tee "$out/tests_xpcs.txt" || true
  if python3 -c 'import h5py, hdf5plugin' 2>"$out/xpcs_missing.txt"; then
    python3 tests/benchmarks/bench_xpcs.py --device gpu --frames 10000 --repeat 3 2>&1 | tee "$out/bench_xpcs_gpu.txt"
  else
    echo "xpcs bench not measured: $(tail -n1 "$out/xpcs_missing.txt")" \
      "(fetch with WHEELS_EXTRA=\"hdf5plugin bitshuffle\" bash $0 wheels)" | tee "$out/bench_xpcs_gpu.txt"
  fi
}

case "${1:-}" in
  wheels) fetch ;;
  run) run ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
