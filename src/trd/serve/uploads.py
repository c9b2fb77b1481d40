"""The uploads of ``POST /v1/score``: received within the size limit and the read deadline, then read
exactly as predict reads files.

The body is counted while it streams in (and refused at once from its Content-Length when that is
declared), so an upload over the limit is never stored whole. It must arrive by its deadline
(``--upload-timeout-s`` from the request's arrival; once the service is stopping, at most
``--grace-s`` after the signal): a client that sends a byte every half second gets 408 (503 when
the service stops) instead of holding the connection, and no queue place is taken before the upload
is in. Each file part is saved under its own name (reduced to a plain file name: clients never
choose server paths) in a private temporary folder of the request, then paired and read by
`trd.data.samples.unlabelled_samples` and `trd.runtime.batches.load_batch`, the code `trd predict`
runs: the checks (image size from the header before decoding, cloud size, units, ...) and the
one-line messages are the CLI's, with the temporary folder left out of them. The request folders
live in the server's `UploadRoot`, which a server killed mid-request does not leave behind for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ..config import DataConfig
from ..data.identity import content_key
from ..data.inputs import AspectOnce, InputStats
from ..data.io import image_size
from ..data.readers import READERS, reader
from ..data.samples import Sample, unlabelled_samples
from ..errors import TRDError
from ..runtime.batches import Batch, load_batch

#: File parts of a score request: name -> what it holds (None: optional).
PARTS = {"rgb": "the RGB image", "xyz": f"the 3D file: {', '.join(r.description for r in READERS.values())}",
         "camera": None}
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
#: Upload folders in the system temp folder: ``trd-serve-<random>`` (a server's `UploadRoot`).
UPLOADS_PREFIX = "trd-serve-"
_LOCK = ".lock"
#: A ``trd-serve-*`` folder without a lock file (one request's folder, as trd made them before
#: `UploadRoot`) older than this is a left-over: a request is received and read within minutes.
_UNLOCKED_STALE_S = 3600.0


class UploadRoot:
    """The private folder (0700, in the system temp folder) of one server's uploads, a sub-folder per
    request (`request_folder`), removed by `close`.

    The server holds an exclusive ``flock`` on the folder's lock file while it runs; the kernel
    drops it however the process ends. A server killed mid-request (SIGKILL, the OOM killer) leaves
    its uploads behind, so each server first removes the ``trd-serve-*`` folders whose lock nobody
    holds (`sweep`). The folder is made and locked under a hidden name and then renamed, so a
    starting server's folder is never seen unlocked.
    """

    def __init__(self, base: Path | None = None) -> None:
        self._base = Path(base or tempfile.gettempdir())
        self.removed = sweep(self._base)
        self._fd: int | None = None
        self._open()

    def _open(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        staging = Path(tempfile.mkdtemp(prefix="." + UPLOADS_PREFIX, dir=self._base))
        self._fd = os.open(staging / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self._base / staging.name[1:]
        os.rename(staging, self.path)

    def request_folder(self) -> tempfile.TemporaryDirectory:
        """A new private folder for one request's files, removed when its block ends (the server's
        folder is made again first if something on the host removed it, e.g. a temp-folder cleaner)."""
        if not self.path.is_dir():
            self._open()
        return tempfile.TemporaryDirectory(dir=self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sweep(base: Path) -> int:
    """Remove this user's upload folders in ``base`` that no running server holds (`UploadRoot`);
    how many."""
    now, removed = time.time(), 0
    for entry in base.glob(UPLOADS_PREFIX + "*"):
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            fd = os.open(entry / _LOCK, os.O_RDWR)
        except FileNotFoundError:  # one request's folder of an older trd
            if now - info.st_mtime > _UNLOCKED_STALE_S:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            continue
        except OSError:
            continue
        try:
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry, ignore_errors=True)  # its server is gone
                removed += 1
        finally:
            os.close(fd)
    return removed


class UploadError(Exception):
    """A request the client must change or send again: HTTP ``status`` (400, 408, 413, 422, 503), a
    one-line message and the answer's extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}


@dataclass
class Deadline:
    """When an upload must be in: ``at`` (event-loop time, ``timeout_s`` after its arrival), or
    earlier when ``stop`` is set (the service's grace time after a signal is over)."""

    at: float
    timeout_s: float
    stop: asyncio.Event


def plain_name(filename: str | None, part: str) -> str:
    """The client's file name reduced to a harmless plain name (no folders, no hidden files)."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(". ")[:120]
    return base or part


async def _limited(stream: AsyncIterator[bytes], max_bytes: int, deadline: Deadline) -> AsyncIterator[bytes]:
    """The chunks of ``stream`` while they stay within ``max_bytes`` and arrive by ``deadline``."""
    loop, total = asyncio.get_running_loop(), 0
    chunks = stream.__aiter__()
    stopped = asyncio.ensure_future(deadline.stop.wait())
    try:
        while True:
            chunk = asyncio.ensure_future(anext(chunks))
            done, _ = await asyncio.wait({chunk, stopped}, timeout=max(deadline.at - loop.time(), 0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if chunk not in done:
                chunk.cancel()
                if stopped in done:
                    raise UploadError(503, "the service is shutting down and the upload was not complete within its "
                                           "grace time (--grace-s); send it again (another replica)",
                                      {"Retry-After": "1", "Connection": "close"})
                raise UploadError(408, f"upload not complete within {deadline.timeout_s:g} s (--upload-timeout-s): "
                                       "too slow a client, or a stalled connection", {"Connection": "close"})
            try:
                data = chunk.result()
            except StopAsyncIteration:
                return
            total += len(data)
            if total > max_bytes:
                raise UploadError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MiB (--max-upload-mb)")
            yield data
    finally:
        stopped.cancel()


def _check_declared_size(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, f"upload of {int(declared) / 2**20:.1f} MiB is over the limit of "
                               f"{max_bytes / 2**20:g} MiB (--max-upload-mb)")


async def receive(request: Request, folder: Path, max_bytes: int, deadline: Deadline) -> dict[str, Path]:
    """Save the file parts of ``request`` under ``folder``; ``{part: saved file}``."""
    _check_declared_size(request, max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError(422, "expected a multipart/form-data upload with file parts 'rgb' and 'xyz'")
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes, deadline), max_files=len(PARTS),
                             max_fields=len(PARTS))
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise UploadError(422, f"malformed multipart upload: {exc.message}") from None
    except ClientDisconnect:
        raise UploadError(400, "the client disconnected before the upload ended") from None
    saved: dict[str, Path] = {}
    try:
        for part, value in form.multi_items():
            if part not in PARTS:
                raise UploadError(422, f"unexpected part {part!r}: expected file parts 'rgb', 'xyz' and optionally 'camera'")
            if not isinstance(value, UploadFile):
                raise UploadError(422, f"part {part!r} must be a file, not a text field")
            if part in saved:
                raise UploadError(422, f"part {part!r} given twice")
            target = folder / part / plain_name(value.filename, part)
            target.parent.mkdir()
            await run_in_threadpool(_copy, value, target)
            saved[part] = target
    finally:
        await form.close()
    for part, what in PARTS.items():
        if what is not None and part not in saved:
            raise UploadError(422, f"missing file part {part!r} ({what})")
    return saved


def _copy(upload: UploadFile, target: Path) -> None:
    upload.file.seek(0)
    with target.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


def client_message(message: str, folder: Path) -> str:
    """``message`` with the request's private folder left out (the names the client gave remain)."""
    for part in PARTS:
        message = message.replace(f"{folder / part}/", "")
    return message.replace(f"{folder}/", "").replace(str(folder), "upload")


def pair(files: dict[str, Path], folder: Path, cfg: DataConfig) -> Sample:
    """The uploaded files as the sample predict would make of them; UploadError(422) when they are no pair."""
    try:
        samples, _ = unlabelled_samples(cfg, rgb=files["rgb"], xyz=files["xyz"], camera=files.get("camera"))
    except TRDError as exc:
        raise UploadError(422, client_message(str(exc), folder)) from None
    return samples[0]


def declared_pixels(sample: Sample, folder: Path, max_pixels: int) -> int:
    """The pixels decoding ``sample`` takes, from its files' headers (nothing decoded): those of its
    larger file. A file over ``max_pixels`` costs nothing: the reader refuses it from its header."""
    try:
        sizes = [image_size(sample.rgb), reader(sample.xyz_kind).size(sample.xyz)]
    except TRDError as exc:
        raise UploadError(422, client_message(str(exc), folder)) from None
    return max((h * w for h, w in sizes if h * w <= max_pixels), default=0)


def read_pair(sample: Sample, folder: Path, cfg: DataConfig, reference: InputStats | None,
              aspect: AspectOnce) -> tuple[Batch, str]:
    """The model inputs of the uploaded pair, read by predict's code, and its content key;
    UploadError(422) for a bad file."""
    try:
        batch = load_batch([sample], range(1), cfg, None, reference, aspect)
        key = content_key(sample.rgb, sample.xyz, sample.camera)
    except TRDError as exc:
        raise UploadError(422, client_message(str(exc), folder)) from None
    if batch.errors:
        raise UploadError(422, client_message(batch.errors[0][1], folder))
    return batch, key
