"""Integrate a stack of synthetic LaB6 calibrant frames with xreduce's public API.

The smallest end-to-end use of the reduction core, and what ``make demo`` runs:

1. a Pilatus1M geometry (pyFAI's PONI convention), slightly tilted;
2. 8 frames of LaB6 powder rings with Poisson noise, a beamstop shadow and -1 in the
   module gaps, as a Pilatus writes them (:mod:`reduction.synthetic`);
3. the whole stack integrated in one batched call, to I(q) and to a cake I(χ, 2θ);
4. two PNGs: the mean I(q) with its error band and the expected ring positions, and the cake.

Usage::

    python docs/examples/integrate_calibrant.py [--out DIR] [--frames N] [--seed S]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np

from reduction import Geometry, Integrator
from reduction.synthetic import calibrant_d_spacings, calibrant_image

matplotlib.use("Agg")  # files only: no display needed (CI, ssh, batch nodes)
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

WAVELENGTH = 0.7e-10  # m (17.7 keV)
BEAMSTOP_RADIUS = 4e-3  # m, shadow of the beamstop around the direct beam


def make_geometry() -> Geometry:
    """A Pilatus1M 200 mm from the sample, beam near the centre, detector slightly tilted."""
    return Geometry(dist=0.2, poni1=0.09, poni2=0.08, rot1=0.01, rot2=-0.005, rot3=0.0,
                    wavelength=WAVELENGTH, detector="Pilatus1M")


def beamstop_mask(geo: Geometry) -> np.ndarray:
    """(ny, nx) True behind a round beamstop and its holder (a strip to the detector's edge)."""
    tth = geo.twotheta()
    r = geo.dist * np.tan(tth)  # distance from the beam, metres (tilt ignored: it is a sketch)
    chi = np.degrees(geo.chi())
    holder = np.abs(chi - 90.0) < 1.5  # a thin arm from the beam to the detector's edge
    return (r < BEAMSTOP_RADIUS) | holder


def make_frames(geo: Geometry, d_spacings: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(n, ny, nx) int32 calibrant frames with Poisson noise, as a photon-counting detector records them."""
    tth = geo.twotheta()
    rng = np.random.default_rng(seed)
    frames = np.stack([calibrant_image(tth, WAVELENGTH, d_spacings, intensity=300.0, background=20.0, rng=rng)
                       for _ in range(n)])
    frames[:, beamstop_mask(geo)] = 0  # no photons behind the beamstop
    frames[:, geo.detector.mask] = -1  # Pilatus convention for pixels in the module gaps
    return frames


def merged(signal: np.ndarray, variance: np.ndarray | None, normalization: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean intensity of all frames and its standard error, from the summed accumulators.

    Summing signal, variance and normalisation over frames, then dividing once, is the exact
    merge of the per-frame results (not an average of ratios).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = normalization.sum(axis=0)
        intensity = signal.sum(axis=0) / norm
        sigma = None if variance is None else np.sqrt(variance.sum(axis=0)) / norm
    return intensity, sigma


def plot_1d(res, d_spacings: np.ndarray, path: Path) -> None:  # res: reduction.IntegrationResult
    """I(q) of the mean frame with a ±3σ band and the expected LaB6 rings; below it, σ/I."""
    intensity, sigma = merged(res.signal, res.variance, res.normalization)
    fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, height_ratios=(3, 1),
                                     layout="constrained")
    ax.plot(res.radial, intensity, lw=0.8, color="C0", label=f"mean of {res.signal.shape[0]} frames")
    if sigma is not None:
        ax.fill_between(res.radial, intensity - 3 * sigma, intensity + 3 * sigma, color="C0", alpha=0.3,
                        lw=0, label="±3σ (standard error of the mean)")
        # The band is thin at full scale: the relative error shows what the error model gives.
        ax_err.plot(res.radial, 100 * sigma / intensity, lw=0.8, color="C0")
    q_rings = 2 * np.pi / (d_spacings * 1e9)  # q = 2π/d, nm⁻¹
    q_rings = q_rings[(q_rings > res.radial[0]) & (q_rings < res.radial[-1])]
    for i, q in enumerate(q_rings):
        ax.axvline(q, color="C3", lw=0.6, ls="--", alpha=0.6, label="LaB6 rings (2π/d)" if i == 0 else None)
    ax.set_ylabel("I (counts / solid angle)")
    ax.set_title("Synthetic LaB6 on a Pilatus1M, λ = 0.7 Å: azimuthal integration")
    ax.legend(loc="upper left")
    ax_err.set_ylabel("σ / I (%)")
    ax_err.set_xlabel("q (nm⁻¹)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_2d(res, path: Path) -> None:
    """The cake I(χ, 2θ) of the mean frame: straight vertical lines mean the geometry is right."""
    intensity, _ = merged(res.signal, None, res.normalization)
    finite = intensity[np.isfinite(intensity)]
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    image = ax.imshow(intensity, origin="lower", aspect="auto", cmap="viridis",
                      vmin=np.percentile(finite, 1), vmax=np.percentile(finite, 99.5),
                      extent=(res.radial_edges[0], res.radial_edges[-1],
                              res.azimuthal_edges[0], res.azimuthal_edges[-1]))
    fig.colorbar(image, ax=ax, label="I (counts / solid angle)")
    ax.set_xlabel("2θ (°)")
    ax.set_ylabel("χ (°)")
    ax.set_title("Cake I(χ, 2θ): gaps and beamstop are masked (blank)")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--frames", type=int, default=8, help="frames in the stack (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the Poisson noise")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    geo = make_geometry()
    d_spacings = calibrant_d_spacings("LaB6")
    frames = make_frames(geo, d_spacings, args.frames, args.seed)
    print(f"{args.frames} synthetic LaB6 frames of {geo.shape[0]}×{geo.shape[1]} pixels (Pilatus1M)")

    # Gaps are part of the detector; the user's mask adds what the experiment hides (beamstop).
    integ = Integrator(geo, mask=geo.detector.mask | beamstop_mask(geo))

    # The first call builds the integration matrix (once per geometry and binning); later
    # calls only apply it, the cost that scales with the number of frames.
    t0 = time.perf_counter()
    res1d = integ.integrate1d(frames, npt=1000, unit="q_nm^-1", splitting="bbox")
    t1 = time.perf_counter()
    res1d = integ.integrate1d(frames, npt=1000, unit="q_nm^-1", splitting="bbox")
    t2 = time.perf_counter()
    res2d = integ.integrate2d(frames, npt_rad=500, npt_azim=360, unit="2th_deg")

    path_1d, path_2d = args.out / "calibrant_1d.png", args.out / "calibrant_2d.png"
    plot_1d(res1d, d_spacings, path_1d)
    plot_2d(res2d, path_2d)

    apply_s = t2 - t1
    mpix = frames.shape[0] * frames[0].size / 1e6
    print(f"1-D integration, first call (builds the matrix, or loads it from the cache): {t1 - t0:.2f} s")
    print(f"1-D integration of the stack (matrix reused): {apply_s * 1e3:.1f} ms = "
          f"{frames.shape[0] / apply_s:.0f} frames/s, {mpix / apply_s:.0f} Mpixel/s")
    print(f"wrote {path_1d}")
    print(f"wrote {path_2d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
