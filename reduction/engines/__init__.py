"""Reduction engines: apply a sparse integration matrix to blocks of frames."""

from .numpy_engine import EngineOutput, NumpyEngine

__all__ = ["EngineOutput", "NumpyEngine"]
