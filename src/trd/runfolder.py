"""One writer per output folder, and no leftovers of a killed writer.

`folder_lock` takes an exclusive ``flock`` on ``FOLDER/.trd.lock`` and writes who holds it (pid,
host, command, start time) into that file. The kernel releases the lock when the process ends,
however it ends (SIGKILL included), so a lock is never stale; a second writer gets an OutputError
naming the holder. A run that ends (normally or with an error) removes the lock file while it
still holds the lock; only a killed process leaves one behind, and the next writer takes it over.
While holding the lock a command removes the temporary files that a killed earlier writer left
behind (`clean_stale_temps`): atomic writes stage ``.<name>.<random>.tmp`` files and folders next
to their target (`trd.atomic`, `trd.data.io.staged_dir`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError, write_error

LOCK_NAME = ".trd.lock"
#: Temporary files and folders of trd.atomic.atomic_open and trd.data.io.staged_dir.
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.(tmp|old)$")


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file's JSON (best effort: it may be half written)."""
    try:
        raw = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"{raw['command']} (pid {raw['pid']} on {raw['host']}, since {raw['started']})"
    except (ValueError, KeyError, OSError, UnicodeDecodeError):
        return "another process"


def _open_locked(lock_path: Path, folder: Path) -> int:
    """A descriptor of ``lock_path`` holding its exclusive lock; OutputError if another process has it.

    The lock file is removed by its holder at the end of a run, so the file locked here may have
    been unlinked between open and flock: then the lock is on a name nobody else sees, and the
    file is opened again.
    """
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(folder, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(folder, f"in use by {holder}; wait for it to finish or use another folder") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the folder's writer lock for the duration of the block; OutputError if another has it.

    Creates the folder. Yields it. Stale temporary files of an earlier writer are removed once the
    lock is held; the lock file is removed when the block ends.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    fd = _open_locked(lock_path, folder)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:
            raise write_error(lock_path, exc) from None
        clean_stale_temps(folder)
        yield folder
    finally:
        with contextlib.suppress(OSError):  # still held: no other writer can be using this file
            lock_path.unlink()
        os.close(fd)  # releases the lock


def clean_stale_temps(folder: Path, depth: int = 2) -> list[Path]:
    """Remove trd's temporary files/folders under ``folder`` (and ``depth`` levels below); returns them.

    Only call this while holding the folder's lock: then no live writer owns them.
    """
    removed = []
    for entry in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if _TEMP.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
        elif depth > 0 and entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            removed += clean_stale_temps(entry, depth - 1)
    return removed
