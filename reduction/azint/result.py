"""The result of an integration: named arrays, never a positional tuple."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IntegrationResult"]


@dataclass(frozen=True)
class IntegrationResult:
    """Azimuthally integrated frames with their accumulators.

    The accumulators are sums over the pixels of each bin, weighted by the pixel-splitting
    fraction ``c`` (``c²`` for the variance); they let results be re-binned or merged exactly:

    - ``signal``        Σ c·(raw − dark)
    - ``variance``      Σ c²·max(raw, 1)  (Poisson, pyFAI's rule; None without an error model)
    - ``normalization`` Σ c·flat·solid_angle·polarisation·monitor
    - ``count``         Σ c over unmasked pixels

    ``intensity = signal / normalization`` and ``sigma = sqrt(variance) / normalization`` (the
    standard error of the mean, as pyFAI's ``sigma``). Bins that no pixel reaches hold NaN.
    Shapes: (B, npt) for 1-D and (B, npt_azim, npt_rad) for 2-D, without the leading B when a
    single 2-D frame was given.
    """

    radial: np.ndarray  # (npt_rad,) bin centres in ``unit``
    radial_edges: np.ndarray  # (npt_rad + 1,) bin boundaries in ``unit``
    intensity: np.ndarray
    sigma: np.ndarray | None
    signal: np.ndarray
    variance: np.ndarray | None
    normalization: np.ndarray
    count: np.ndarray
    unit: str
    splitting: str
    azimuthal: np.ndarray | None = None  # (npt_azim,) bin centres in degrees, 2-D only
    azimuthal_edges: np.ndarray | None = None  # (npt_azim + 1,) degrees, 2-D only

    @property
    def ndim(self) -> int:
        """1 for I(radial), 2 for a cake I(χ, radial)."""
        return 1 if self.azimuthal is None else 2
