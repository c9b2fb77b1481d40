"""A scored scan into the result store (`trd.store`), the same way for `trd serve` and `trd predict`.

The record's folder gets the scan's own files (what `trd calibrate --store` rescores and ``trd store
export-defects`` copies) and the images of the result, drawn once from the engine's arrays by the
caller (`trd.runtime.heatmap.result_images`), so a stored result can be shown again after a restart.
"""

from __future__ import annotations

from typing import Any

from ..data.identity import content_key
from ..data.samples import Sample
from ..store import Store, Stored
from ..store.files import scan_copies


def scan_key(sample: Sample) -> str:
    """The identity of a scan: `trd.data.identity.content_key` of its files."""
    return content_key(sample.rgb, sample.xyz, sample.camera)


def store_result(store: Store, record: dict[str, Any], sample: Sample, images: dict[str, bytes],
                 source: str) -> tuple[Stored, dict[str, bytes]]:
    """Store a scored scan with its files and ``images`` (`trd.runtime.heatmap.result_images`); (the
    stored record, its images). A scan the store holds already for this model is not stored again:
    the stored record and its images come back."""
    staged = store.stage(scan_copies(sample.rgb, sample.xyz, sample.camera), images)
    stored, new = store.add(record, source=source, kind=sample.xyz_kind, staged=staged)
    return stored, images if new else stored_images(store, stored)


def stored_images(store: Store, stored: Stored) -> dict[str, bytes]:
    """The image files of a stored result (none where it has no folder)."""
    folder = store.folder(stored)
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in folder.glob("*.png") if p.name.startswith(("view-", "heatmap-"))}
