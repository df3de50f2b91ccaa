"""reduction.io.h5write makes the same HDF5 objects as h5py's high level: types, dataspaces, values,
layouts, fill values, timestamps, link and attribute order and encodings, virtual mappings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from h5_helpers import describe

from reduction.io import h5write
from reduction.io.nexus import str_array

VALUES: dict[str, Any] = {
    "text": "NXazint1d",
    "unicode": "2θ in degrees, Å",
    "empty_text": "",
    "flag": np.bool_(True),
    "python_bool": False,
    "float": np.float64(1.5),
    "nan": np.float64(np.nan),
    "int": np.int64(7),
    "python_int": 3,
    "python_float": 2.5,
    "vector": np.linspace(0, 1, 5),
    "frames": np.arange(12, dtype=np.int64).reshape(-1, 2),
    "no_rows": np.zeros((0, 2), dtype=np.int64),
    "strings": str_array(["a", "bé", ""]),
    "no_strings": str_array([]),
    "float32": np.arange(3, dtype=np.float32),
}
ATTRS = {"NX_class": "NXdata", "signal": "I", "axes": str_array([".", "radial_axis"]), "units": "1/nm",
         "flag": np.bool_(False), "count": 3, "scale": 0.5, "long_name": "2θ bin edges"}


def _high_level(f: h5py.File) -> None:
    g = f.create_group("entry_é", track_order=True)
    g.attrs.update(ATTRS)
    for name, value in VALUES.items():
        g[name] = value
    ds = g.create_dataset("with_attrs", data=np.arange(4.0))
    ds.attrs.update(ATTRS)
    layout = h5py.VirtualLayout(shape=(10, 3), dtype=np.float64)
    layout[2:5] = h5py.VirtualSource("chunks/a.h5", "intensity", shape=(3, 3), dtype=np.float64)
    layout[6:10] = h5py.VirtualSource("chunks/b%%.h5", "intensity", shape=(4, 3), dtype=np.float64)
    g.create_virtual_dataset("virtual", layout, fillvalue=np.nan)
    layout = h5py.VirtualLayout(shape=(4,), dtype=np.float64)
    layout[0:4] = h5py.VirtualSource("c.h5", "monitor", shape=(4,), dtype=np.float64)
    g.create_virtual_dataset("virtual_1d", layout, fillvalue=np.nan)


def _low_level(f: h5py.File) -> None:
    g = h5write.group(f, "entry_é")
    h5write.set_attrs(g, ATTRS)
    for name, value in VALUES.items():
        h5write.put(g, name, value)
    h5write.put(g, "with_attrs", np.arange(4.0), ATTRS)
    h5write.put_virtual(g, "virtual", (10, 3), np.float64,
                        [(2, 5, "chunks/a.h5", "intensity"), (6, 10, "chunks/b%%.h5", "intensity")], np.nan)
    h5write.put_virtual(g, "virtual_1d", (4,), np.float64, [(0, 4, "c.h5", "monitor")], np.nan)


@pytest.mark.parametrize("libver", ["earliest", "v110"])
def test_low_level_objects_equal_h5pys_high_level(tmp_path: Path, libver: str) -> None:
    paths = {}
    for label, write in (("high", _high_level), ("low", _low_level)):
        paths[label] = tmp_path / f"{label}.h5"
        with h5py.File(paths[label], "w", track_order=True, libver=libver) as f:
            write(f)
    with h5py.File(paths["high"], "r") as high, h5py.File(paths["low"], "r") as low:
        expected, got = describe(high), describe(low)
    assert len(expected) == len(VALUES) + 4
    for want, have in zip(expected, got):
        assert have == want
    assert got == expected


def test_unicode_arrays_are_refused_with_the_fix_named(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "f.h5", "w") as f, pytest.raises(TypeError, match="str_array"):
        h5write.put(f, "names", np.array(["a", "b"]))
