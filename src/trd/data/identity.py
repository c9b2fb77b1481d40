"""Identity by content: a scan (or a model) is the bytes of its files, not the paths they were given by.

Paths lie about identity both ways: one scan can be named by a relative path, an absolute one or a
link, and a line scanner rewrites ``latest.png`` with a new scan under the same name. A record of a
scored pair is therefore keyed by :func:`content_key` of its files, and a model by
:func:`files_sha256` of its file(s).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError

_BLOCK = 1 << 20


def _update(digest: "hashlib._Hash", path: Path) -> None:
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror or exc}") from None


def files_sha256(*paths: Path, missing_ok: bool = False) -> str:
    """Hex sha256 over the contents of ``paths`` in order (with ``missing_ok``, files that do not
    exist are left out: a model and its optional external-weights file)."""
    digest = hashlib.sha256()
    for path in paths:
        if missing_ok and not path.is_file():
            continue
        _update(digest, path)
    return digest.hexdigest()


def content_key(rgb: Path, xyz: Path, camera: Path | None = None) -> str:
    """The identity of one scan: hex sha256 over its RGB file, its 3D file and, where its 3D file
    needs one, its camera file, each preceded by its length (so no two different triples collide by
    shifting bytes from one file to the next)."""
    digest = hashlib.sha256()
    for path in (rgb, xyz, camera):
        if path is None:
            digest.update(b"-")
            continue
        try:
            digest.update(b"%d:" % path.stat().st_size)
        except OSError as exc:
            raise DataError(path, f"cannot read: {exc.strerror or exc}") from None
        _update(digest, path)
    return digest.hexdigest()
