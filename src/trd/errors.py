"""Errors a user can act on. The CLI prints them as one line (``error: ...``) and exits with their code.

Exit codes: 2 for bad input or settings (`DataError`, `CheckpointError`, `ConfigError`), 3 when an
output cannot be written (`OutputError`: a busy run folder, a read-only or full disk, no
permission); ``trd predict`` exits 1 when some samples could not be scored but the others were.
"""

from __future__ import annotations

import errno
from pathlib import Path


class TRDError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 2


class DataError(TRDError):
    """A data file or folder is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(TRDError):
    """A checkpoint cannot be loaded (truncated, other model, other version)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class ConfigError(TRDError):
    """A configuration value or override is invalid."""


class OutputError(TRDError):
    """An output cannot be written: the folder is in use, read-only, full, or not ours to write."""

    exit_code = 3

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


#: What to tell the user for the errno of a failed write.
_WRITE_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere (--out)",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere (--out)",
    errno.EROFS: "read-only file system; choose a writable folder (--out)",
    errno.EACCES: "permission denied; choose a folder you may write to (--out) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you may write to (--out)",
}


def write_error(path: str | Path, exc: OSError) -> OutputError:
    """An OutputError naming ``path`` for an OSError raised while writing it."""
    advice = _WRITE_ADVICE.get(exc.errno or 0)
    return OutputError(path, f"cannot write: {advice or (exc.strerror or str(exc))}")


def training_install_needed() -> TRDError:
    """The error of a command that needs PyTorch where only the runtime install is present."""
    return TRDError("this command needs the training install (PyTorch), which is not installed here: "
                    "pip install 'trd-anomaly[train]'")


def require_torch() -> None:
    """`training_install_needed` where torch is not installed (asked of the import system: nothing
    is imported, so the runtime can call it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken install, or an import blocked on purpose
        found = False
    if not found:
        raise training_install_needed()
