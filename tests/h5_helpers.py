"""Everything a reader (or h5dump) sees of an HDF5 file, object by object, for comparing two files."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np


def _attrs(obj: Any) -> list[tuple]:
    out = []
    for name in obj.attrs:
        attr = h5py.h5a.open(obj.id, name.encode())
        value = obj.attrs[name]
        out.append((name, attr.get_type().dtype.str, h5py.check_string_dtype(attr.dtype), attr.shape,
                    repr(value.tolist() if isinstance(value, np.ndarray) else value)))
    return out


def describe(f: h5py.File) -> list[tuple]:
    """Everything about every object that a reader (or h5dump) would see, except addresses."""
    rows: list[tuple] = []

    def visit(name: str, obj: Any) -> None:
        parent = f[name.rpartition("/")[0] or "/"]
        link = parent.id.links.get_info(name.rpartition("/")[2].encode())
        row: list[Any] = [name, type(obj).__name__, link.cset, _attrs(obj)]
        if isinstance(obj, h5py.Group):
            gcpl = obj.id.get_create_plist()
            row += [gcpl.get_link_creation_order(), gcpl.get_attr_creation_order(), gcpl.get_obj_track_times(),
                    list(obj)]
        else:
            dcpl = obj.id.get_create_plist()
            tid = obj.id.get_type()
            fill = np.zeros(1, dtype=obj.dtype) if obj.dtype.kind != "O" else None
            if fill is not None:
                dcpl.get_fill_value(fill)
            row += [tid.get_class(), tid.get_size(), obj.dtype.str, h5py.check_string_dtype(obj.dtype), obj.shape,
                    obj.id.get_space().get_simple_extent_type(), dcpl.get_layout(), dcpl.get_obj_track_times(),
                    dcpl.fill_value_defined(), repr(fill), dcpl.get_attr_creation_order()]
            if obj.is_virtual:
                row += [(m.file_name, m.dset_name, m.vspace.get_regular_hyperslab(), m.vspace.get_select_type(),
                         m.src_space.get_select_type(), m.src_space.shape) for m in obj.virtual_sources()]
            else:
                value = obj[()]
                row.append(repr(value.tolist() if isinstance(value, np.ndarray) else value))
        rows.append(tuple(row))

    f.visititems(visit)
    return rows
