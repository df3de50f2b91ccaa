"""xreduce's science: pyFAI-compatible azimuthal integration of detector frames, batched.

The public surface is small on purpose::

    from reduction import Geometry, Integrator
    geo = Geometry.from_poni("setup.poni")
    res = Integrator(geo, mask=mask).integrate1d(frames, npt=1000, unit="q_nm^-1")

``reduction`` never imports ``hpc`` (the orchestration layer).
"""

from .errors import GeometryError, IntegrationError, XReduceError
from .geometry import Geometry
from .integrator import Integrator
from .result import IntegrationResult

__all__ = ["Geometry", "Integrator", "IntegrationResult", "XReduceError", "GeometryError", "IntegrationError"]
__version__ = "0.1.0"
