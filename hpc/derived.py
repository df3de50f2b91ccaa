"""``xreduce rebin`` and ``xreduce sum``: new master files from an existing one's stored results.

Thin: the master's reduction kind (known from its entries' NeXus definition) does the work
(:meth:`reduction.step.Kind.rebin`, :meth:`~reduction.step.Kind.sum_frames`); a bad input
(not a master, no such entry, a factor that does not divide the bins, an output that exists) is a
usage error (exit 2), said in one line naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reduction.errors import InputError
from reduction.step import master_kind

from .errors import ConfigError

__all__ = ["rebin", "sum_frames", "default_output"]


@contextmanager
def _usage_errors() -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        raise ConfigError(str(exc)) from None


def default_output(master: Path, suffix: str) -> Path:
    """``<master stem>_<suffix>.nxs`` beside the master."""
    return master.with_name(f"{master.stem}_{suffix}.nxs")


def _entries(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def rebin(master: Path, *, factor: int, azimuthal_factor: int = 1, entries: str | None = None,
          output: Path | None = None, overwrite: bool = False) -> int:
    """Re-bin ``master`` by merging adjacent bins; print where the new master is."""
    suffix = f"rebin{factor}" + (f"x{azimuthal_factor}" if azimuthal_factor != 1 else "")
    out = output or default_output(master, suffix)
    with _usage_errors():
        kind = master_kind(master)
        written = kind.rebin(master, out, factor=factor, azimuthal_factor=azimuthal_factor,
                             entries=_entries(entries), overwrite=overwrite)
    print(f"master: {written}", flush=True)
    return 0


def sum_frames(master: Path, *, entries: str | None = None, frames: str | None = None, mean: bool = False,
               combine: str | None = None, output: Path | None = None, overwrite: bool = False) -> int:
    """Sum (or average) frames of ``master``'s entries; print where the new master is."""
    out = output or default_output(master, "mean" if mean else "sum")
    with _usage_errors():
        kind = master_kind(master)
        written = kind.sum_frames(master, out, entries=_entries(entries), frames=frames, mean=mean, combine=combine,
                                  overwrite=overwrite)
    print(f"master: {written}", flush=True)
    return 0
