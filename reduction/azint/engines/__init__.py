"""Reduction engines: apply a sparse integration matrix to blocks of frames.

``NumpyEngine`` runs everywhere; ``OpenCLEngine`` needs pyopencl and an OpenCL device (PoCL on
CPUs, the vendor's ICD on GPUs) and imports pyopencl only when constructed.
"""

from reduction.errors import EngineUnavailable

from .contract import EngineOutput
from .numpy_engine import NumpyEngine
from .opencl_engine import OpenCLEngine

__all__ = ["EngineOutput", "EngineUnavailable", "NumpyEngine", "OpenCLEngine"]
