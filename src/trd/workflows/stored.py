"""A scored scan into the result store (`trd.store`), the same way for `trd serve` and `trd predict`.

The record's folder gets the scan's own files (what `trd calibrate --store` rescores and ``trd store
export-defects`` copies) and the images of the result, drawn once from the engine's arrays by the
caller (`trd.runtime.heatmap.result_images`), so a stored result can be shown again after a restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.samples import Sample
from ..store import DEFAULT_NAME, Retention, open_store
from ..store.files import scan_copies

if TYPE_CHECKING:
    from ..store import Store, Stored


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


def open_model_store(model_file: Path, store: str | None, files: str | None, retention: Retention, log: Callable[[str], None],
                     fallback: Path | None = None) -> Store | None:
    """The store ``store`` names ("none": None). Default: ``results.db`` beside the model file; where
    that folder cannot be written (a model on a read-only mount), in ``fallback`` (predict's output
    folder), else in the user data folder (``$XDG_DATA_HOME/trd/stores/<model>/``), said in ``log``."""
    if store is not None and store.lower() == "none":
        return None
    if store is None:
        store = str(default_store(model_file, fallback, log))
    return open_store(store, files, retention, log)


def default_store(model_file: Path, fallback: Path | None, log: Callable[[str], None]) -> Path:
    """Where a model's results go when no ``--store`` is given (see `open_model_store`)."""
    beside = model_file.parent / DEFAULT_NAME
    if os.access(model_file.parent, os.W_OK) and (not beside.exists() or os.access(beside, os.W_OK)):
        return beside
    if fallback is None:
        home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        fallback = home / "trd" / "stores" / f"{model_file.parent.name}-{model_file.stem}"
    fallback.mkdir(parents=True, exist_ok=True)
    log(f"{model_file.parent} cannot be written: storing the results in {fallback / DEFAULT_NAME} (--store to choose)")
    return fallback / DEFAULT_NAME
