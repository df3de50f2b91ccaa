"""xreduce's science: reduction kinds (azimuthal integration, ...) and the files they read and write.

The public surface is small on purpose::

    from reduction import Geometry, Integrator
    geo = Geometry.from_poni("setup.poni")
    res = Integrator(geo, mask=mask).integrate1d(frames, npt=1000, unit="q_nm^-1")

Layout: :mod:`reduction.step` is the contract a reduction kind implements and the registry of
kinds; :mod:`reduction.errors` the error types; :mod:`reduction.io` BLISS raw data, images, PONI
files and atomic writes; one package per kind (:mod:`reduction.azint`, :mod:`reduction.sum`);
:mod:`reduction.demo` synthetic data. ``reduction`` never imports ``hpc`` (the orchestration
layer). The names below are imported on first use, so that ``import reduction.step`` stays light.
"""

from typing import Any

from .errors import GeometryError, IntegrationError, XReduceError

__all__ = ["Geometry", "Integrator", "IntegrationResult", "XReduceError", "GeometryError", "IntegrationError"]
__version__ = "0.1.0"

_LAZY = {"Geometry": "reduction.azint.geometry", "Integrator": "reduction.azint.integrator",
         "IntegrationResult": "reduction.azint.result"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reduction' has no attribute {name!r}")
