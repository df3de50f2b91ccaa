"""HDF5 groups, datasets and attributes created through h5py's low-level API, exactly as its high
level creates them, at a third of the cost: for master files of thousands of entries.

A NeXus entry is some forty small datasets and thirty attributes. Through ``group[name] = value``
and ``obj.attrs[name] = value`` each costs 70–130 µs, most of it h5py's Python layer (argument
checks, property lists built anew, wrappers); a master file of 10 000 entries spent about 150 s
there (docs/performance.md, "Campaign layer at scale"). The functions here make the same HDF5 calls
with the same types, dataspaces and property lists (links with intermediate groups and ASCII or
UTF-8 names, no timestamps on datasets and groups, creation order tracked in groups; virtual datasets
as :class:`h5py.VirtualLayout` makes them), so a file reads back the same, object for object
(tests/reduction/test_h5write.py compares them with h5py's high level).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5o, h5p, h5s, h5t

__all__ = ["group", "put", "set_attrs", "put_virtual", "copy"]

_ORDER = h5p.CRT_ORDER_TRACKED | h5p.CRT_ORDER_INDEXED


def _plists() -> tuple[Any, Any, Any, Any]:
    """Link (ASCII and UTF-8 names), dataset and group creation lists as h5py's high level sets them."""
    ascii_lcpl = h5p.create(h5p.LINK_CREATE)
    ascii_lcpl.set_create_intermediate_group(True)
    utf8_lcpl = ascii_lcpl.copy()
    utf8_lcpl.set_char_encoding(h5t.CSET_UTF8)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)
    gcpl = h5p.create(h5p.GROUP_CREATE)
    gcpl.set_link_creation_order(_ORDER)
    gcpl.set_attr_creation_order(_ORDER)
    gcpl.set_obj_track_times(False)
    return ascii_lcpl, utf8_lcpl, dcpl, gcpl


_ASCII_LCPL, _UTF8_LCPL, _DCPL, _GCPL = _plists()


def _name(name: str) -> tuple[bytes, Any]:
    """The encoded name and its link creation list (ASCII where it can be, as h5py does)."""
    try:
        return name.encode("ascii"), _ASCII_LCPL
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_LCPL


def _array(value: Any) -> np.ndarray:
    """``value`` as the array h5py would store: text as variable-length UTF-8 strings, else numpy's own."""
    if isinstance(value, str):
        return np.array(value, dtype=h5py.string_dtype())
    data = np.asarray(value, order="C")
    if data.dtype.kind == "U":
        raise TypeError(f"numpy unicode arrays cannot be stored in HDF5: use reduction.io.nexus.str_array ({value!r})")
    return data


@lru_cache(maxsize=256)
def _type_space(dtype: np.dtype, text: Any, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """The file type, memory type and dataspace of ``dtype`` and ``shape``, made once (``text``: h5py's
    string info, in the key because numpy's dtype equality ignores it)."""
    return h5t.py_create(dtype, logical=True), h5t.py_create(dtype), h5s.create_simple(shape)


def _types(data: np.ndarray) -> tuple[Any, Any, Any]:
    return _type_space(data.dtype, h5py.check_string_dtype(data.dtype), data.shape)


def group(parent: h5py.Group, name: str) -> h5py.Group:
    """``parent.create_group(name, track_order=True)``: a new group whose children keep their writing order."""
    encoded, lcpl = _name(name)
    return h5py.Group(h5g.create(parent.id, encoded, lcpl=lcpl, gcpl=_GCPL))


def put(parent: h5py.Group, name: str, value: Any, attrs: Mapping[str, Any] | None = None) -> None:
    """``parent[name] = value`` (a contiguous dataset, or a scalar one), then its attributes ``attrs``."""
    data = _array(value)
    encoded, lcpl = _name(name)
    file_type, _, space = _types(data)
    dset = h5d.create(parent.id, encoded, file_type, space, dcpl=_DCPL, lcpl=lcpl)
    try:
        dset.write(h5s.ALL, h5s.ALL, data)
        if attrs:
            set_attrs(dset, attrs)
    finally:
        dset.close()  # at once: closing it later, when the next one is open, costs HDF5 more (~30 µs)


def set_attrs(obj: h5py.HLObject | Any, attrs: Mapping[str, Any]) -> None:
    """``obj.attrs[key] = value`` for each new attribute (``obj``: an h5py object or a low-level id)."""
    oid = obj.id if isinstance(obj, h5py.HLObject) else obj
    for key, value in attrs.items():
        data = _array(value)
        file_type, memory_type, space = _types(data)
        attr = h5a.create(oid, key.encode("utf-8"), file_type, space)
        try:
            attr.write(data, mtype=memory_type)
        finally:
            attr.close()


def put_virtual(parent: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any,
                sources: Sequence[tuple[int, int, str, str]], fillvalue: Any) -> h5d.DatasetID:
    """A virtual dataset ``name`` of ``shape``, rows [start, stop) of which are the whole dataset
    ``source`` of file ``file_name`` for each ``(start, stop, file_name, source)``; ``fillvalue``
    elsewhere. The same mapping as ``layout[start:stop] = h5py.VirtualSource(file_name, source,
    (stop - start, *shape[1:]))`` then ``parent.create_virtual_dataset(name, layout, fillvalue)``."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_layout(h5d.VIRTUAL)
    rest = tuple(shape[1:])
    for start, stop, file_name, source in sources:
        vspace = h5s.create_simple(tuple(shape))
        vspace.select_hyperslab((start,) + (0,) * len(rest), (stop - start, *rest), (1,) * len(shape))
        dcpl.set_virtual(vspace, os.fsencode(file_name), source.encode("utf-8"),
                         h5s.create_simple((stop - start, *rest)))
    dcpl.set_fill_value(np.array([fillvalue]))
    return h5d.create(parent.id, _name(name)[0], h5t.py_create(np.dtype(dtype), logical=True),
                      h5s.create_simple(tuple(shape)), dcpl=dcpl)


def copy(source: h5py.Group, name: str, target: h5py.Group) -> None:
    """Copy the object ``name`` of ``source`` (with everything below it) to ``target`` under the same name,
    in HDF5 (``H5Ocopy``): about 1 ms for a NeXus entry that took 6 ms to write object by object."""
    encoded, lcpl = _name(name)
    h5o.copy(source.id, encoded, target.id, encoded, lcpl=lcpl)
