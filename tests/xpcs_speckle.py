"""A synthetic speckle series with a known g2, for the XPCS tests.

Each pixel's intensity is the mean of M independent speckle patterns, ``I = μ/M · Σ_m |a_m(t)|²``,
each field ``a_m`` a complex AR(1) (discrete Ornstein–Uhlenbeck) process with unit power and
correlation ``ρ = exp(−1/τc)`` per frame; counts are Poisson(I). So, for a lag of τ ≥ 1 frames,

    g2(τ) = 1 + β·exp(−2τ/τc),   β = 1/M,

exactly (Poisson noise adds nothing off lag 0). Multi-tau level L correlates frames binned by
T = 2^L: the binned g2 at lag τ (a multiple of T, τ ≥ T) is ``1 + β·exp(−2τ/τc)·F_L`` with the
binning factor ``F_L = [sinh(ΓT/2) / (T·sinh(Γ/2))]²``, Γ = 2/τc (:func:`g2_model`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["speckle_frames", "g2_model", "fit_g2", "direct_g2"]


def speckle_frames(mean: np.ndarray, tau_c: np.ndarray, nframes: int, modes: int, seed: int = 0,
                   dtype: str = "uint16") -> np.ndarray:
    """(nframes, *mean.shape) Poisson counts; ``mean`` (counts/pixel/frame) and ``tau_c`` (frames)
    per pixel."""
    rng = np.random.default_rng(seed)
    shape = mean.shape
    rho = np.exp(-1.0 / tau_c.ravel())
    kick = np.sqrt(1.0 - rho * rho)
    npix = rho.size

    def noise() -> np.ndarray:
        return (rng.standard_normal((modes, npix)) + 1j * rng.standard_normal((modes, npix))) / np.sqrt(2.0)

    field = noise()
    out = np.empty((nframes, npix), dtype=dtype)
    scale = mean.ravel() / modes
    for t in range(nframes):
        intensity = scale * (field.real**2 + field.imag**2).sum(axis=0)
        out[t] = rng.poisson(intensity)
        field = rho * field + kick * noise()
    return out.reshape(nframes, *shape)


def g2_model(delay: np.ndarray, level: np.ndarray, baseline: float, beta: float, tau_c: float) -> np.ndarray:
    """The multi-tau g2 of the speckle series at ``delay`` (frames) measured at ``level``."""
    gamma = 2.0 / tau_c
    T = 2.0 ** np.asarray(level, dtype=float)
    factor = (np.sinh(gamma * T / 2) / (T * np.sinh(gamma / 2))) ** 2
    return baseline + beta * np.exp(-gamma * np.asarray(delay, dtype=float)) * factor


def fit_g2(delay: np.ndarray, level: np.ndarray, g2: np.ndarray, err: np.ndarray,
           guess_tau: float) -> tuple[float, float, float]:
    """(baseline, β, τc) fitted to one q bin's g2 with :func:`g2_model` (weighted by ``err``)."""
    from scipy.optimize import curve_fit

    ok = np.isfinite(g2) & np.isfinite(err) & (err > 0)
    delay, level, g2, err = delay[ok], level[ok], g2[ok], err[ok]

    def model(x: np.ndarray, b: float, beta: float, tau: float) -> np.ndarray:
        return g2_model(delay, level, b, beta, tau)

    popt, _ = curve_fit(model, delay, g2, p0=(1.0, 0.3, guess_tau), sigma=err, absolute_sigma=True, maxfev=20000)
    return float(popt[0]), float(popt[1]), float(popt[2])


def direct_g2(frames: np.ndarray, static: np.ndarray, static_to_dynamic: np.ndarray, n_dynamic: int):
    """g2 and its error straight from the definition, every delay on its own, float64."""
    N, P = frames.shape
    from reduction.xpcs.multitau import delays

    x = frames.astype(np.float64)
    d, lv = delays(N)
    S = static.max() + 1
    g2 = np.full((len(d), n_dynamic), np.nan)
    err = np.full_like(g2, np.nan)
    for k, (tau, level) in enumerate(zip(d, lv)):
        T = 2**level
        NL = N // T
        J = x[:NL * T].reshape(NL, T, P).mean(axis=1)
        lag = tau // T
        G2 = (J[lag:] * J[:NL - lag]).mean(axis=0)
        IP, IF = J[:NL - lag].mean(axis=0), J[lag:].mean(axis=0)
        g2_s = np.array([G2[static == s].mean() / (IP[static == s].mean() * IF[static == s].mean())
                         for s in range(S)])
        norm = np.array([IP[static == s].mean() * IF[static == s].mean() for s in range(S)])
        pix = G2 / norm[static]
        for q in range(n_dynamic):
            members = np.flatnonzero(static_to_dynamic == q)
            g2[k, q] = g2_s[members].mean()
            inside = np.isin(static, members)
            err[k, q] = pix[inside].std(ddof=1) / np.sqrt(inside.sum())
    return g2, err
