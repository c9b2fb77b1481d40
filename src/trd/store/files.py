"""The files of stored records: one folder per record under the store's files root.

A record's folder, ``<model sha256[:16]>/<content key[:2]>/<content key>/``, holds the scan as it
arrived (``rgb<suffix>``, ``3d<suffix>`` and ``camera.json`` where its 3D file needs one: what
`trd calibrate` rescores and ``trd store export-defects`` copies) and the images of its result
(``view-rgb.png``, ``view-3d.png``: the inputs as the model saw them; ``heatmap-fused.png`` and
``heatmap-<branch>.png``; ``mask.png``: pixels above the pixel threshold).

A writer stages the folder under ``.staging/`` (each file written and fsynced), then moves it into
place before the database row that points at it is committed: a row never names a missing folder,
and a writer killed in between leaves a folder no row names, which the next add of the same scan
reuses. Staging folders older than an hour are left-overs of killed writers and are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from ..errors import write_error

STAGING = ".staging"
#: Staging folders older than this belong to a killed writer (a record is staged in well under a second).
STALE_S = 3600.0


def record_folder(model_sha256: str, key: str) -> str:
    """The folder of the record of scan ``key`` scored by model ``model_sha256``, relative to the root."""
    safe = "".join(c for c in key if c.isalnum())[:64] or "scan"
    return f"{model_sha256[:16]}/{safe[:2]}/{safe}"


def scan_copies(rgb: Path, x3d: Path, camera: Path | None) -> dict[str, Path]:
    """The files of a scan under their names in a record's folder (`stage`'s ``copies``); the camera
    file where there is one (a model that keeps its camera reads depth PNGs without one)."""
    copies = {f"rgb{rgb.suffix.lower()}": rgb, f"3d{x3d.suffix.lower()}": x3d}
    if camera is not None and camera.is_file():
        copies["camera.json"] = camera
    return copies


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _copy(path: Path, source: Path) -> None:
    """Copy ``source`` to ``path`` inside the kernel (`shutil.copyfile`: no copy of a scan's
    megabytes through Python), then sync it."""
    shutil.copyfile(source, path)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Sync a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(root: Path, copies: Mapping[str, Path], data: Mapping[str, bytes]) -> Path:
    """A new staging folder holding ``copies`` (name -> file copied in) and ``data`` (name -> bytes)."""
    folder = root / STAGING / uuid.uuid4().hex
    try:
        folder.mkdir(parents=True)
        for name, source in copies.items():
            _copy(folder / name, source)
        for name, content in data.items():
            _write(folder / name, content)
        _fsync(folder)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise write_error(folder, exc) from None
    return folder


def place(root: Path, staged: Path, relative: str) -> None:
    """Move ``staged`` to ``root/relative``; where that folder exists already (the same scan and
    model: the same files), the staged copy is dropped."""
    target = root / relative
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            discard(staged)
            return
        try:
            os.rename(staged, target)
        except OSError:
            if not target.is_dir():  # not the race of two writers of one scan: a real failure
                raise
            discard(staged)
        _fsync(target.parent)
    except OSError as exc:
        raise write_error(target, exc) from None


def discard(staged: Path | None) -> None:
    """Remove a staging folder (its record was not stored, or is stored already)."""
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


def remove(root: Path, relative: str | None) -> None:
    """Remove a record's folder (retention), and the folders above it that it leaves empty."""
    if not relative:
        return
    target = root / relative
    shutil.rmtree(target, ignore_errors=True)
    for parent in (target.parent, target.parent.parent):
        with contextlib.suppress(OSError):
            parent.rmdir()  # only when empty


def clean_staging(root: Path, now: float | None = None) -> int:
    """Remove staging folders of killed writers (older than `STALE_S`); how many."""
    now = time.time() if now is None else now
    removed = 0
    for entry in (root / STAGING).iterdir() if (root / STAGING).is_dir() else ():
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > STALE_S:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed
