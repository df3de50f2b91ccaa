"""Choosing the OpenCL device: ``auto``, ``cpu``, ``gpu`` or ``"platform:device"`` indices.

The choice is a pure function (:func:`select_device`) over plain descriptions of the devices
(:class:`DeviceInfo`) and of the GPUs the batch system assigned (:class:`Assignment`), so it is
tested with fake devices; :func:`open_device` feeds it what pyopencl and the node report.

Rules
-----
* ``"P:D"``: device D of platform P, exactly (an error if there is none).
* ``"cpu"``: the first CPU device (platform order, then device order).
* ``"gpu"``: the GPU the batch system assigned, else (no assignment) the first GPU.
* ``"auto"`` (and ``None``): as ``"gpu"`` when a GPU is visible, else the first CPU device.

The assigned GPU (Slurm GPU nodes)
----------------------------------
Slurm says which GPU a task owns through ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS`` (the node's GPU
indices, i.e. the minor numbers of ``/dev/nvidiaN`` with the usual ``gres.conf``),
``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-<uuid>``) or ``ROCR_VISIBLE_DEVICES`` /
``HIP_VISIBLE_DEVICES`` (AMD).  The first variable present wins, in that order: SLURM_*_GPUS
are node-global, whereas Slurm may renumber ``CUDA_VISIBLE_DEVICES`` from 0 inside a
cgroup-constrained step.  The tokens are turned into PCI addresses with the driver's own table
(:func:`nvidia_gpu_table`: ``/proc/driver/nvidia/gpus/*/information``, minor number, UUID, bus;
:func:`amd_gpu_table`: the KFD topology in ``/sys``), and the OpenCL device is the one with that
PCI address (``cl_nv_device_attribute_query``: CL_DEVICE_PCI_BUS_ID_NV/SLOT_ID_NV/DOMAIN_ID_NV;
``cl_amd_device_attribute_query``: CL_DEVICE_TOPOLOGY_AMD).  Never "device 0 of whatever is
visible": on a shared node that may be another job's GPU.

When the address cannot be established (no driver table, an OpenCL platform that does not expose
PCI ids, tokens that do not resolve), the only case accepted is *one* assigned GPU and *one*
visible GPU: with Slurm's device cgroups a task can open only the GPUs it was given, so a single
visible GPU is the assigned one (logged as unverified).  With more than one GPU visible the
choice is refused (:class:`EngineUnavailable` naming the variable and the devices), so that
``engine="auto"`` falls back to the numpy engine with that reason instead of guessing.  An
assignment with no OpenCL GPU visible at all (e.g. no NVIDIA ICD in the container) leaves
``auto`` on the CPU device and makes ``gpu`` an error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from reduction.errors import EngineUnavailable, IntegrationError

__all__ = ["EngineUnavailable", "PciAddress", "DeviceInfo", "Assignment", "GpuRecord", "parse_request",
           "assignment_from_env", "nvidia_gpu_table", "amd_gpu_table", "resolve_assignment", "select_device",
           "list_devices", "open_device"]

log = logging.getLogger(__name__)

#: Environment variables naming the assigned GPUs, first present wins.
GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                 "HIP_VISIBLE_DEVICES")

_INSTALL_HINT = ("install them with `pip install pyopencl pocl-binary-distribution` (PoCL runs the kernels "
                 "on the CPU; GPU nodes need the vendor's OpenCL ICD)")


class PciAddress(NamedTuple):
    """A PCI address; ``domain`` is None where the source does not give it (AMD topology)."""

    domain: int | None
    bus: int
    device: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """``"0000:65:00.0"``, ``"00000000:65:00.0"`` (nvidia-smi) or ``"65:00.0"``."""
        m = re.fullmatch(r"\s*(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])\s*", text)
        if not m:
            raise ValueError(f"not a PCI address: {text!r}")
        dom = None if m.group(1) is None else int(m.group(1), 16)
        return cls(dom, int(m.group(2), 16), int(m.group(3), 16), int(m.group(4)))

    def matches(self, other: PciAddress) -> bool:
        """Same bus/device/function, and same domain where both know it."""
        if (self.bus, self.device, self.function) != (other.bus, other.device, other.function):
            return False
        return self.domain is None or other.domain is None or self.domain == other.domain

    def __str__(self) -> str:
        dom = "????" if self.domain is None else f"{self.domain:04x}"
        return f"{dom}:{self.bus:02x}:{self.device:02x}.{self.function}"


@dataclass(frozen=True)
class DeviceInfo:
    """What the selection needs to know of one OpenCL device."""

    platform_index: int
    device_index: int
    platform: str
    name: str
    kind: str  # "gpu", "cpu", "accelerator" or "other"
    pci: PciAddress | None = None
    fp64: bool = True
    global_mem: int = 0

    @property
    def index(self) -> str:
        return f"{self.platform_index}:{self.device_index}"

    def __str__(self) -> str:
        where = f", PCI {self.pci}" if self.pci is not None else ""
        return f"{self.index} {self.name!r} ({self.kind}, {self.platform}{where})"


@dataclass(frozen=True)
class Assignment:
    """The GPUs a batch system assigned: the variable it came from and its tokens."""

    variable: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class GpuRecord:
    """One GPU of the node as its driver lists it: index (as the variables count), PCI, UUID."""

    index: int
    pci: PciAddress
    uuid: str | None = None


# ---------------------------------------------------------------------------------------------
# Requests and environment
# ---------------------------------------------------------------------------------------------
def parse_request(request: str | None) -> str | tuple[int, int]:
    """``None``/"auto"/"cpu"/"gpu" → that word; ``"P:D"`` → (P, D)."""
    if request is None:
        return "auto"
    text = str(request).strip().lower()
    if text in ("auto", "cpu", "gpu"):
        return text
    m = re.fullmatch(r"(\d+):(\d+)", text)
    if m:
        return int(m.group(1)), int(m.group(2))
    raise IntegrationError(f"device {request!r} is not one of 'auto', 'cpu', 'gpu' or 'platform:device' "
                           "indices such as '0:1'")


def assignment_from_env(env: Mapping[str, str]) -> Assignment | None:
    """The first of :data:`GPU_VARIABLES` set in ``env``; None when none is."""
    for var in GPU_VARIABLES:
        if var in env:
            raw = env[var].strip()
            tokens = () if raw in ("", "NoDevFiles", "none") else tuple(t.strip() for t in raw.split(",") if t.strip())
            return Assignment(var, tokens)
    return None


def _parse_nvidia_information(text: str, dirname: str) -> GpuRecord | None:
    """One ``/proc/driver/nvidia/gpus/<bus>/information`` file."""
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()) if v)
    try:
        minor = int(fields["Device Minor"])
        pci = PciAddress.parse(fields.get("Bus Location", dirname))
    except (KeyError, ValueError):
        return None
    return GpuRecord(minor, pci, fields.get("GPU UUID"))


def nvidia_gpu_table(root: str | Path = "/proc/driver/nvidia/gpus") -> list[GpuRecord]:
    """The node's NVIDIA GPUs (index = device minor number), from the driver's /proc files."""
    out = []
    for info in sorted(Path(root).glob("*/information")):
        try:
            rec = _parse_nvidia_information(info.read_text(errors="replace"), info.parent.name)
        except OSError:
            continue
        if rec is not None:
            out.append(rec)
    return sorted(out, key=lambda r: r.index)


def _parse_kfd_properties(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def amd_gpu_table(root: str | Path = "/sys/class/kfd/kfd/topology/nodes") -> list[GpuRecord]:
    """The node's AMD GPUs in ROCm order (KFD nodes with SIMDs), PCI from ``location_id``."""
    nodes = []
    for props in Path(root).glob("*/properties"):
        try:
            node = int(props.parent.name)
            p = _parse_kfd_properties(props.read_text(errors="replace"))
        except (OSError, ValueError):
            continue
        if p.get("simd_count", 0) > 0 and "location_id" in p:
            loc = p["location_id"]
            pci = PciAddress(p.get("domain"), (loc >> 8) & 0xFF, (loc >> 3) & 0x1F, loc & 0x7)
            uid = p.get("unique_id")
            nodes.append((node, pci, None if not uid else f"GPU-{uid:016x}"))
    nodes.sort()
    return [GpuRecord(i, pci, uid) for i, (_, pci, uid) in enumerate(nodes)]


def resolve_assignment(assignment: Assignment, table: Sequence[GpuRecord]) -> list[PciAddress] | None:
    """PCI addresses of the assigned GPUs, in the assigned order; None if any token is unknown.

    Tokens are indices (SLURM_*_GPUS: device minor numbers; CUDA_VISIBLE_DEVICES: position in
    PCI-bus order, i.e. ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` and nvidia-smi's numbering; ROCm: KFD
    order) or UUIDs (``GPU-...``, matched case-insensitively, prefixes allowed as CUDA does).
    """
    if not table:
        return None
    by_bus = sorted(table, key=lambda r: (r.pci.domain or 0, r.pci.bus, r.pci.device, r.pci.function))
    out = []
    for token in assignment.tokens:
        if token.isdigit():
            idx = int(token)
            if assignment.variable.startswith("SLURM_"):
                rec = next((r for r in table if r.index == idx), None)
            elif assignment.variable == "CUDA_VISIBLE_DEVICES":
                rec = by_bus[idx] if idx < len(by_bus) else None
            else:
                rec = next((r for r in table if r.index == idx), None)
        else:
            low = token.lower()
            hits = [r for r in table if r.uuid and r.uuid.lower().startswith(low)]
            rec = hits[0] if len(hits) == 1 else None
        if rec is None:
            return None
        out.append(rec.pci)
    return out


# ---------------------------------------------------------------------------------------------
# The choice
# ---------------------------------------------------------------------------------------------
def _listing(devices: Sequence[DeviceInfo]) -> str:
    return "; ".join(str(d) for d in devices) or "none"


def select_device(devices: Sequence[DeviceInfo], request: str | None = "auto", *,
                  assignment: Assignment | None = None,
                  assigned_pci: Sequence[PciAddress] | None = None) -> DeviceInfo:
    """The device to use (see the module docstring for the rules).

    Parameters
    ----------
    devices : every OpenCL device, in platform then device order.
    request : "auto" (or None), "cpu", "gpu" or "P:D".
    assignment : the GPUs named by the batch system's variables, if any.
    assigned_pci : their PCI addresses (:func:`resolve_assignment`), None when unknown.

    Raises
    ------
    EngineUnavailable
        No device fits the request, or the assigned GPU cannot be identified among several.
    """
    want = parse_request(request)
    if not devices:
        raise EngineUnavailable("no OpenCL device found (no platform/ICD installed?); " + _INSTALL_HINT)
    if isinstance(want, tuple):
        for dev in devices:
            if (dev.platform_index, dev.device_index) == want:
                return dev
        raise EngineUnavailable(f"no OpenCL device {want[0]}:{want[1]}; devices: {_listing(devices)}")
    cpus = [d for d in devices if d.kind == "cpu"]
    gpus = [d for d in devices if d.kind == "gpu"]
    if want == "cpu":
        if not cpus:
            raise EngineUnavailable(f"no OpenCL CPU device; devices: {_listing(devices)}")
        return cpus[0]
    if gpus:
        if assignment is None:
            return gpus[0]
        return _assigned_gpu(gpus, assignment, assigned_pci)
    if want == "gpu":
        extra = f" ({assignment.variable}={','.join(assignment.tokens)})" if assignment else ""
        raise EngineUnavailable(f"no OpenCL GPU device{extra}; devices: {_listing(devices)}")
    if cpus:
        if assignment is not None and assignment.tokens:
            log.info("%s names GPU(s) %s but OpenCL sees no GPU (vendor ICD missing?): using the CPU device",
                     assignment.variable, ",".join(assignment.tokens))
        return cpus[0]
    raise EngineUnavailable(f"no OpenCL GPU or CPU device; devices: {_listing(devices)}")


def _assigned_gpu(gpus: Sequence[DeviceInfo], assignment: Assignment,
                  assigned_pci: Sequence[PciAddress] | None) -> DeviceInfo:
    where = f"{assignment.variable}={','.join(assignment.tokens) or '(empty)'}"
    if not assignment.tokens:
        raise EngineUnavailable(f"{where}: the batch system assigned no GPU; visible: {_listing(gpus)}")
    if assigned_pci:
        for pci in assigned_pci:
            for dev in gpus:
                if dev.pci is not None and dev.pci.matches(pci):
                    return dev
        if any(d.pci is not None for d in gpus):
            raise EngineUnavailable(f"{where} is PCI {', '.join(map(str, assigned_pci))}, which no visible OpenCL "
                                    f"GPU has: {_listing(gpus)}")
    if len(gpus) == 1 and len(assignment.tokens) == 1:
        log.warning("%s: cannot verify the GPU's PCI address (%s); using the only visible GPU %s", where,
                    "driver table unavailable" if not assigned_pci else "OpenCL does not report PCI ids", gpus[0])
        return gpus[0]
    raise EngineUnavailable(f"{where}: cannot tell which of {len(gpus)} visible GPUs was assigned (no PCI "
                            f"address from {'the driver' if not assigned_pci else 'OpenCL'}); refusing to guess. "
                            f"Visible: {_listing(gpus)}. Pass device='P:D' to choose explicitly")


# ---------------------------------------------------------------------------------------------
# pyopencl side
# ---------------------------------------------------------------------------------------------
def _import_pyopencl() -> Any:
    try:
        import pyopencl as cl
    except ImportError as exc:
        raise EngineUnavailable(f"pyopencl is not installed ({exc}); {_INSTALL_HINT}") from None
    return cl


def _pci_of(cl: Any, dev: Any) -> PciAddress | None:
    """The device's PCI address from the NVIDIA or AMD attribute extension, if exposed."""
    ext = dev.extensions
    try:
        if "cl_nv_device_attribute_query" in ext:
            bus = int(dev.get_info(cl.device_info.PCI_BUS_ID_NV))
            slot = int(dev.get_info(cl.device_info.PCI_SLOT_ID_NV))  # device << 3 | function
            try:
                domain = int(dev.get_info(cl.device_info.PCI_DOMAIN_ID_NV))
            except Exception:  # older drivers: no domain query
                domain = None
            return PciAddress(domain, bus, slot >> 3, slot & 7)
        if "cl_amd_device_attribute_query" in ext:
            topo = dev.get_info(cl.device_info.TOPOLOGY_AMD)
            return PciAddress(None, int(topo.bus), int(topo.device), int(topo.function))
    except Exception as exc:  # a driver refusing the query: treated as "not exposed"
        log.debug("PCI query failed on %s: %s", dev.name, exc)
    return None


def list_devices() -> list[tuple[DeviceInfo, Any]]:
    """Every OpenCL device as (DeviceInfo, pyopencl.Device); EngineUnavailable if none can be listed."""
    cl = _import_pyopencl()
    try:
        platforms = cl.get_platforms()
    except Exception as exc:  # pyopencl raises LogicError/RuntimeError for "no ICD"
        raise EngineUnavailable(f"no OpenCL platform ({exc}); {_INSTALL_HINT}. Note that setting "
                                "OCL_ICD_VENDORS hides PoCL's pip-installed ICD") from None
    out = []
    for pi, plat in enumerate(platforms):
        try:
            devs = plat.get_devices()
        except Exception as exc:
            log.info("OpenCL platform %s lists no device: %s", plat.name, exc)
            continue
        for di, dev in enumerate(devs):
            kind = ("gpu" if dev.type & cl.device_type.GPU else "cpu" if dev.type & cl.device_type.CPU
                    else "accelerator" if dev.type & cl.device_type.ACCELERATOR else "other")
            info = DeviceInfo(pi, di, plat.name.strip(), dev.name.strip(), kind, _pci_of(cl, dev),
                              "cl_khr_fp64" in dev.extensions or bool(dev.double_fp_config),
                              int(dev.global_mem_size))
            if dev.available and dev.compiler_available:
                out.append((info, dev))
    return out


def open_device(request: str | None = "auto", env: Mapping[str, str] | None = None) -> tuple[DeviceInfo, Any]:
    """Select (see :func:`select_device`) and return (DeviceInfo, pyopencl.Device)."""
    want = parse_request(request)
    env = os.environ if env is None else env
    found = list_devices()
    infos = [info for info, _ in found]
    assignment = assignment_from_env(env) if want in ("auto", "gpu") else None
    assigned_pci = None
    if assignment is not None and assignment.tokens and any(i.kind == "gpu" for i in infos):
        table = nvidia_gpu_table() or amd_gpu_table()
        assigned_pci = resolve_assignment(assignment, table)
    chosen = select_device(infos, want if isinstance(want, str) else f"{want[0]}:{want[1]}",
                           assignment=assignment, assigned_pci=assigned_pci)
    log.info("OpenCL device %s", chosen)
    return chosen, next(dev for info, dev in found if info == chosen)
