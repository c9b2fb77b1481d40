"""Identity by content: a scan (or a model) is the bytes of its files, not the paths they were given by.

Paths lie about identity both ways: one scan can be named by a relative path, an absolute one or a
link, and a line scanner rewrites ``latest.png`` with a new scan under the same name. A record of a
scored pair is therefore keyed by :func:`content_key` of its files, and a model by
:func:`files_sha256` of its file(s).

Hashing the paper model (1.75 GB) costs ~1.6 s, on every start of every command, replica and worker;
:func:`model_sha256` remembers the hash in a small sidecar file of the user cache against what the
file system says of each file (size, mtime, inode, device and ctime) and hashes again whenever any of
them differs. ctime cannot be set back (``os.utime`` sets it to now), so a file rewritten in place
with the same size and its old mtime restored is still noticed; a file replaced by a rename has
another inode.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DataError, OutputError
from .cache import default_cache_dir

_BLOCK = 1 << 20
#: A file whose ctime is less than this before the hash started is hashed again next time: a change
#: in the same tick of a coarse file-system clock (1-2 s) would leave every timestamp as it was.
RACY_NS = 2_000_000_000


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
    needs one and it exists, its camera file (a model that keeps its camera reads depth PNGs without
    one), each preceded by its length (so no two different triples collide by shifting bytes from
    one file to the next)."""
    digest = hashlib.sha256()
    if camera is not None and not camera.is_file():
        camera = None
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


def identity_cache_dir() -> Path:
    """Where `model_sha256` keeps its sidecar files: beside the preprocessing cache (``$TRD_CACHE/../identity``)."""
    return default_cache_dir().parent / "identity"


def _stat(path: Path) -> list[int] | None:
    """(size, mtime, inode, device, ctime) of ``path`` in ns; None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns]


def model_sha256(*paths: Path, missing_ok: bool = False) -> str:
    """`files_sha256` of ``paths``, remembered against each file's size, mtime, inode, device and
    ctime in a sidecar file (`identity_cache_dir`) and never trusted across a change of any of them.

    Where the file system gives no inode or ctime, or the cache cannot be written, every call hashes.
    """
    resolved = [Path(p).resolve() for p in paths]
    try:
        stats = [_stat(p) for p in resolved]
    except OSError:
        return files_sha256(*paths, missing_ok=missing_ok)  # it names the file and the problem
    if any(s is not None and (s[2] == 0 or s[4] == 0) for s in stats):
        return files_sha256(*paths, missing_ok=missing_ok)
    names = [str(p) for p in resolved]
    sidecar = identity_cache_dir() / (hashlib.sha256("\n".join([str(missing_ok), *names]).encode()).hexdigest()[:32] + ".json")
    try:
        saved = json.loads(sidecar.read_text())
        if (saved["paths"] == names and saved["stats"] == stats
                and all(s is None or s[4] < saved["hashed_at_ns"] - RACY_NS for s in stats)):
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no sidecar yet, or a damaged one: hash
    started = time.time_ns()
    sha = files_sha256(*paths, missing_ok=missing_ok)
    if [_stat(p) for p in resolved] == stats:  # not changed while it was read
        try:
            atomic_write_text(sidecar, json.dumps({"paths": names, "stats": stats, "sha256": sha,
                                                   "hashed_at_ns": started}))
        except OutputError:
            pass  # a read-only cache: hash every time
    return sha
