"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

A failed write (full disk, read-only file system, no permission) leaves no partial file behind and
raises `trd.errors.OutputError` naming the target, which the CLI reports in one line (exit code 3).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import TRDError, write_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_write_failure(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write, also when a library wrapped it (torch.save raises
    RuntimeError("... file write failed") with the OSError as its context); else None."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, TRDError):  # our own errors say what happened
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = is_write_failure(exc)
        if failure is not None:
            raise write_error(path, failure) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer(fh)`` on a binary temp file, then move it into place (e.g. torch.save, np.save)."""
    with atomic_open(path, "wb") as fh:
        writer(fh)
