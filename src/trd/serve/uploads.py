"""The uploads of ``POST /v1/score``: received within the size limit, then read exactly as predict reads files.

The body is counted while it streams in (and refused at once from its Content-Length when that is
declared), so an upload over the limit is never stored whole. Each file part is saved under its own
name (reduced to a plain file name: clients never choose server paths) in a private temporary folder
of the request, then paired and read by `trd.data.samples.unlabelled_samples` and
`trd.runtime.batches.load_batch`, the code `trd predict` runs: the checks (image size from the
header before decoding, cloud size, units, ...) and the one-line messages are the CLI's, with the
temporary folder left out of them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ..config import DataConfig
from ..data.inputs import AspectOnce, InputStats
from ..data.readers import READERS
from ..data.samples import Sample, unlabelled_samples
from ..errors import TRDError
from ..runtime.batches import Batch, load_batch

#: File parts of a score request: name -> what it holds (None: optional).
PARTS = {"rgb": "the RGB image", "xyz": f"the 3D file: {', '.join(r.description for r in READERS.values())}",
         "camera": None}
_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


class UploadError(Exception):
    """A request the client must change: HTTP ``status`` (400, 413, 422) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def plain_name(filename: str | None, part: str) -> str:
    """The client's file name reduced to a harmless plain name (no folders, no hidden files)."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip(". ")[:120]
    return base or part


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > max_bytes:
            raise UploadError(413, f"upload larger than the limit of {max_bytes / 2**20:g} MiB (--max-upload-mb)")
        yield chunk


def _check_declared_size(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, f"upload of {int(declared) / 2**20:.1f} MiB is over the limit of "
                               f"{max_bytes / 2**20:g} MiB (--max-upload-mb)")


async def receive(request: Request, folder: Path, max_bytes: int) -> dict[str, Path]:
    """Save the file parts of ``request`` under ``folder``; ``{part: saved file}``."""
    _check_declared_size(request, max_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadError(422, "expected a multipart/form-data upload with file parts 'rgb' and 'xyz'")
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes), max_files=len(PARTS),
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


def read_pair(files: dict[str, Path], folder: Path, cfg: DataConfig, reference: InputStats | None,
              aspect: AspectOnce) -> tuple[Batch, Sample]:
    """The model inputs of the uploaded pair, read by predict's code, and its sample (which files,
    which 3D kind); UploadError(422) for a bad file."""
    try:
        samples, _ = unlabelled_samples(cfg, rgb=files["rgb"], xyz=files["xyz"], camera=files.get("camera"))
        batch = load_batch(samples, range(1), cfg, None, reference, aspect)
    except TRDError as exc:
        raise UploadError(422, client_message(str(exc), folder)) from None
    if batch.errors:
        raise UploadError(422, client_message(batch.errors[0][1], folder))
    return batch, samples[0]
