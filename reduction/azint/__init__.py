"""Azimuthal integration (``reduction=azint1d`` / ``azint2d``): geometry, pixel-splitting matrices,
engines, the integrator, and the step that turns chunks of frames into chunk files and NXazint masters."""
