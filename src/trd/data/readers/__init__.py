"""3D file readers, one module per kind of file, registered here by kind.

A reader (`base.Reader`) turns one 3D file into what the 3D branch needs: an organised point cloud
(float32 HxWx3, missing points (0, 0, 0); `trd.data.inputs` converts it to metres and checks it) or a
normal-map image. It also says which dataset folder holds such files, which suffixes it accepts and
which dataset formats use it. Dataset layouts (`trd.data.samples`), every command, the server and
its page learn the accepted 3D files from :data:`READERS`, so a new format is one module here (and
its line below) plus its tests.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from . import depth_png, normals_png, pcd, ply, xyz_tiff
from .base import Reader, ReadOptions

#: Every reader by kind, in the order layouts list them.
READERS: dict[str, Reader] = {r.kind: r for r in (xyz_tiff.READER, pcd.READER, ply.READER, depth_png.READER,
                                                   normals_png.READER)}


def reader(kind: str) -> Reader:
    """The reader of ``kind`` (a `Sample`'s ``xyz_kind``)."""
    try:
        return READERS[kind]
    except KeyError:
        raise ValueError(f"unknown 3D input kind {kind!r}; known: {', '.join(READERS)}") from None


def folders(fmt: str) -> dict[str, dict[str, str]]:
    """The 3D folders of dataset format ``fmt``: folder name -> {suffix: kind} (layout order)."""
    found: dict[str, dict[str, str]] = {}
    for r in READERS.values():
        if fmt in r.formats:
            for suffix in r.suffixes:
                found.setdefault(r.folder, {}).setdefault(suffix, r.kind)
    return found


def suffixes(fmt: str) -> list[str]:
    """Every 3D file suffix a model of dataset format ``fmt`` reads, sorted."""
    return sorted({s for by_suffix in folders(fmt).values() for s in by_suffix})


def kind_of(path: Path, fmt: str) -> str:
    """The kind of 3D file ``path`` is for a model of format ``fmt`` (by its suffix, any case)."""
    kinds = {s: k for by_suffix in folders(fmt).values() for s, k in by_suffix.items()}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"a {fmt} model reads 3D files ending in {', '.join(sorted(kinds))}")
    return kind


__all__ = ["READERS", "ReadOptions", "Reader", "folders", "kind_of", "reader", "suffixes"]
