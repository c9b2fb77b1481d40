"""On-disk cache of preprocessed 3D inputs: computed once per (file, parameter set), then reused.

The 3D preprocessing (`trd.data.geometry.preprocess_3d`) is deterministic and costs far more than
reading a small ``.npy``, so its results are kept across epochs and runs. An entry's key covers the
source file (resolved path, size, mtime, and a hash of its first and last 64 KiB) and the
parameters; a changed file or parameter therefore misses instead of returning stale data.
Entries are written atomically, so DataLoader workers may race on the same entry: the last rename
wins and readers never see half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_save
from ..config import DataConfig
from ..errors import OutputError

#: Bump when the preprocessing code changes its output, to invalidate every existing entry.
CACHE_VERSION = "1"
_EDGE_BYTES = 64 * 1024


def default_cache_dir() -> Path:
    """``$TRD_CACHE`` if set, else ``~/.cache/trd/preprocess``."""
    env = os.environ.get("TRD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trd" / "preprocess"


def _content_hash(path: Path, size: int) -> str:
    """sha256 of the whole file if small, else of its first and last 64 KiB.

    Catches a rewrite that keeps size and mtime (most formats change their header or their tail);
    hashing everything would cost as much as reading the cloud again.
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= 2 * _EDGE_BYTES:
            digest.update(fh.read())
        else:
            digest.update(fh.read(_EDGE_BYTES))
            fh.seek(size - _EDGE_BYTES)
            digest.update(fh.read(_EDGE_BYTES))
    return digest.hexdigest()


def cache_key(path: Path, params: dict[str, Any]) -> str:
    """Hex sha256 identifying (code version, file identity and content, parameters)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    fields = [
        CACHE_VERSION,
        str(resolved),
        stat.st_size,
        stat.st_mtime_ns,
        _content_hash(resolved, stat.st_size),
        json.dumps(params, sort_keys=True),
    ]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


class PreprocessCache:
    """``.npy`` files under ``root`` (two-level fan-out by key prefix); ``root=None`` disables it.

    ``hits`` counts results read from disk, ``misses`` results computed (every call when disabled).
    """

    def __init__(self, root: Path | str | None) -> None:
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0

    def entry_path(self, key: str) -> Path:
        """Where the entry of ``key`` lives (``root/ab/cd/abcd....npy``)."""
        if self.root is None:
            raise ValueError("the cache is disabled (root=None)")
        return self.root / key[:2] / key[2:4] / f"{key}.npy"

    def get(self, path: Path, params: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array for (``path``, ``params``), or ``compute()``'s result, stored for next time.

        An unreadable or corrupt entry is recomputed and overwritten. A failure to write the entry
        (read-only or full disk) only warns: the computed result is still returned.
        """
        if self.root is None:
            self.misses += 1
            return compute()
        try:
            entry = self.entry_path(cache_key(path, params))
        except OSError:  # unreadable source: let compute() report it with its own error
            self.misses += 1
            return compute()
        try:
            with entry.open("rb") as fh:
                value = np.lib.format.read_array(fh, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            pass  # absent, or corrupt/truncated (hand edits, disk errors): compute and (re)write
        else:
            self.hits += 1
            return value
        self.misses += 1
        value = np.asarray(compute())
        try:
            atomic_save(entry, lambda fh: np.save(fh, value, allow_pickle=False))
        except OutputError as exc:  # a full or read-only cache disk slows runs down, it does not stop them
            warnings.warn(f"could not write preprocessing cache entry {exc}", stacklevel=2)
        return value


def build_cache(cfg: DataConfig) -> PreprocessCache | None:
    """The preprocessing cache a config asks for: ``cache_dir`` "" is the default location
    (`default_cache_dir`), "none" disables it."""
    if cfg.cache_dir == "none":
        return None
    return PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())
