"""Exceptions of xreduce's orchestration layer.

They extend the one hierarchy rooted in :class:`reduction.errors.XReduceError`. The command line
maps them to exit codes: :class:`ConfigError` is a usage error (exit 2, raised before anything
runs); the others end a command with exit 1. Messages name the key, file, scan or chunk at fault.
"""

from __future__ import annotations

from reduction.errors import XReduceError

__all__ = ["XReduceError", "ConfigError", "PlanError", "BackendError", "CampaignBusy"]


class ConfigError(XReduceError):
    """The configuration is invalid: unknown key, wrong type, missing value, bad path or override."""


class PlanError(XReduceError):
    """A campaign cannot be planned: no dataset matched, a plan file is missing or inconsistent."""


class BackendError(XReduceError):
    """A backend cannot run, submit to or query its scheduler (local pool, Slurm, Dask, MPI)."""


class CampaignBusy(XReduceError):
    """Another ``run``/``submit``/``merge`` (or its Slurm jobs) holds the campaign lock of the output folder."""
