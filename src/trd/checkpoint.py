"""Checkpoints: written atomically, validated on load, loadable in a new process.

Two kinds share one format:
- ``state.pt``  resumable training state (students, optimisers, schedulers, epoch, history; no RNG
  state: the only randomness, the shuffle, is seeded by (seed, epoch)), rewritten at epoch
  boundaries by wall time (``train.checkpoint_minutes``) and after the last epoch, so a killed run
  resumes at its last written epoch; removed once ``model.pt`` is written (unless
  ``train.keep_state``);
- ``model.pt``  the finished detector (students, validation statistics, thresholds, config) that
  ``trd test``, ``trd predict`` and ``trd export`` read.

`sniff` tells from a file's first bytes what it is (a trd checkpoint of which kind, an ONNX export,
another tool's PyTorch file, a zip, a pickle, text, an image ...) without torch, so that the CLI
names a wrong-kind file and the flag that takes it before any heavy import (`check_model_file`).
Torch is imported only by the functions that read or write checkpoints.
"""

from __future__ import annotations

import contextlib
import io
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import atomic_save
from .config import LEGACY_BRANCH_NAMES
from .errors import CheckpointError

if TYPE_CHECKING:
    import torch

FORMAT = "trd-checkpoint"
#: Version 2 renamed the geometry branch from "3d" to "geo"; version 1 files are converted on load.
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: Entries every checkpoint of a kind must hold (checked on load, so a hand-edited or foreign file
#: fails with its name instead of a KeyError deep in the loader).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("config", "students", "teachers", "scorer", "thresholds", "extra"),
    "train_state": ("config", "epoch", "history", "students", "optimizers", "schedulers"),
}


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> None:
    """Save ``payload`` (tensors, dicts, numbers, strings) under a header naming its kind."""
    import torch

    blob = {"format": FORMAT, "version": VERSION, "kind": kind, **payload}
    atomic_save(path, lambda fh: torch.save(blob, fh))


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu",
                    *, mmap: bool = False) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a one-line CheckpointError naming the file.

    ``mmap=True`` maps the tensors instead of reading them (copy-on-write): cheap when only the
    small entries (config, epoch, history) are needed from a multi-GB file, and a load into a model
    then holds the weights once instead of twice. Files are replaced atomically, never rewritten in
    place, so a mapping stays valid.
    """
    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, expected a checkpoint file (e.g. RUN/model.pt)")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    found = sniff(path)
    if found.kind not in ("trd", "torch", "broken"):  # the file's kind says more than torch's error would
        raise CheckpointError(path, _not_a_checkpoint(found))
    try:
        blob = None
        if mmap:
            with contextlib.suppress(Exception):  # not a zip checkpoint: read below, with its own error
                blob = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        if blob is None:
            blob = torch.load(io.BytesIO(path.read_bytes()), map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load on arbitrary bytes raises almost anything
        # (RuntimeError, EOFError, UnpicklingError, BadZipFile, ValueError, OSError, KeyError on text ...)
        raise CheckpointError(path, f"not a readable checkpoint (truncated or corrupt?): {_first_sentence(exc)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(path, f"not a trd checkpoint{_WHERE['torch']}")
    if blob.get("version") not in SUPPORTED_VERSIONS:
        raise CheckpointError(path, f"checkpoint version {blob.get('version')} is not supported "
                                    f"(this trd reads versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    if blob.get("kind") != kind:
        raise CheckpointError(path, f"is a {blob.get('kind')!r} checkpoint, expected {kind!r}")
    missing = [key for key in REQUIRED_KEYS.get(kind, ()) if key not in blob]
    if missing:
        raise CheckpointError(path, f"incomplete {kind!r} checkpoint: missing {', '.join(missing)}")
    return _upgrade(blob)


def _renamed_keys(entries: dict[str, Any]) -> dict[str, Any]:
    """Rename the branch in keys "<branch>", "<branch>.rest" and "<prefix>.<branch>.rest"."""
    out = {}
    for key, value in entries.items():
        parts = key.split(".")
        for i, part in enumerate(parts[:2]):
            if part in LEGACY_BRANCH_NAMES:
                parts[i] = LEGACY_BRANCH_NAMES[part]
                break
        out[".".join(parts)] = value
    return out


def _upgrade(blob: dict[str, Any]) -> dict[str, Any]:
    """Convert a version-1 blob in place of loading: only the branch name changed ("3d" -> "geo")."""
    if blob["version"] == VERSION:
        return blob
    for key in ("students", "teachers", "scorer", "optimizers", "schedulers"):
        if isinstance(blob.get(key), dict):
            blob[key] = _renamed_keys(blob[key])
    holders = [blob, blob["extra"]] if isinstance(blob.get("extra"), dict) else [blob]
    for holder in holders:  # train_state keeps the history at the top, model.pt under "extra"
        if isinstance(holder.get("history"), list):
            holder["history"] = [{k.replace("loss_3d", "loss_geo"): v for k, v in record.items()}
                                 for record in holder["history"] if isinstance(record, dict)]
    blob["version"] = VERSION
    return blob


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message, after its type name (torch's RuntimeErrors
    say enough without it), e.g. "KeyError: 101" for a text file."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    end = first.find(". ")
    first = first[: end + 1] if end > 0 else first
    return first if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {first}"


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str) -> None:
    """``load_state_dict`` whose shape/key mismatches become a CheckpointError ("from another model")."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(path, f"{what} do not match this model (checkpoint from another model?): {detail[:200]}") from None


# --- what a file is, from its first bytes (no torch) ----------------------------------------------

@dataclass(frozen=True)
class FileKind:
    """What `sniff` found: ``kind`` is "trd" (a trd checkpoint; ``checkpoint`` says which kind),
    "onnx", "torch" (a PyTorch zip file without the trd header), "broken" (a zip that cannot be
    read: truncated or corrupt) or another word ("empty", "text", "image", "pickle", "zip",
    "safetensors", "hdf5", "unknown"); ``what`` says it in words ("an ONNX export")."""

    kind: str
    what: str
    checkpoint: str = ""


#: Where a wrong-kind file goes instead, after "..., not a trd checkpoint".
_WHERE = {
    "onnx": ": an ONNX export runs with 'trd predict --onnx FILE' or 'trd serve --model FILE'; this "
            "command needs the model.pt it was exported from",
    "torch": " (no trd header); another tool's checkpoint or a plain state dict? ImageNet teacher weights go to "
             "--backbone-weights or 'trd weights import'; a model.pt is written by 'trd fit'",
    "pickle": " (trd model files are PyTorch zip files written by 'trd fit')",
    "safetensors": " (another tool's weights; a model.pt is written by 'trd fit')",
    "hdf5": " (another tool's model, e.g. Keras; a model.pt is written by 'trd fit')",
}
_IMAGES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"II*\x00": "a TIFF file",
           b"MM\x00*": "a TIFF file", b"BM": "a BMP image"}
#: Field numbers and wire types of an ONNX ModelProto (onnx.proto): ir_version, producer_name,
#: producer_version, domain, model_version, doc_string, graph, opset_import, metadata_props.
_ONNX_FIELDS = {(1, 0), (2, 2), (3, 2), (4, 2), (5, 0), (6, 2), (7, 2), (8, 2), (14, 2)}


def sniff(path: str | Path) -> FileKind:
    """What the file at ``path`` is, from its first bytes and, for a zip, its directory (no torch).

    Example:
        >>> sniff("runs/puck/model.pt")  # doctest: +SKIP
        FileKind(kind='trd', what="a trd 'model' checkpoint", checkpoint='model')
    """
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(4096)
    size = path.stat().st_size
    if not head:
        return FileKind("empty", "is empty (0 bytes)")
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    for magic, what in _IMAGES.items():
        if head.startswith(magic):
            return FileKind("image", f"is {what}")
    if head.startswith(b"\x89HDF"):
        return FileKind("hdf5", "is an HDF5 file")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind("pickle", "is a Python pickle (an old-style torch.save file or another tool's)")
    if len(head) > 10 and int.from_bytes(head[:8], "little") < size and head[8:10] == b'{"':
        return FileKind("safetensors", "is a safetensors file")
    if _is_text(head):
        return FileKind("text", "is a text file")
    if _looks_like_onnx(head, size):
        return FileKind("onnx", "is an ONNX export")
    return FileKind("unknown", "is in no format trd knows")


def _sniff_zip(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
            if not pickles:
                return FileKind("zip", "is a zip archive with no PyTorch data inside")
            with archive.open(pickles[0]) as fh:
                header = _leading_strings(fh.read(4096))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return FileKind("broken", "is a zip file that cannot be read (truncated or corrupt?)")
    if FORMAT in header:  # trd writes the header first: format, version, kind
        kind = header[header.index("kind") + 1] if "kind" in header[:-1] else "?"
        return FileKind("trd", f"is a trd {kind!r} checkpoint", kind)
    return FileKind("torch", "is a PyTorch file")


def _leading_strings(data: bytes, limit: int = 12) -> list[str]:
    """The first ``limit`` strings a pickle holds (the trd header: format, its value, version, kind, its value)."""
    out: list[str] = []
    with contextlib.suppress(Exception):  # a cut-off pickle ends the walk; what was read is kept
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                out.append(arg)
                if len(out) >= limit:
                    break
    return out


def _looks_like_onnx(head: bytes, size: int) -> bool:
    """The file starts with ir_version, and its first three protobuf fields are ModelProto fields
    with plausible lengths (onnx.proto; serialisers write fields in field-number order)."""
    pos, seen = 0, 0
    while seen < 3 and pos < len(head):
        tag, pos = _varint(head, pos)
        field, wire = tag >> 3, tag & 7
        if (field, wire) not in _ONNX_FIELDS or (seen == 0 and field != 1):
            return False
        value, pos = _varint(head, pos)
        if wire == 2:
            if pos + value > size:
                return False
            pos += value
        seen += 1
    return seen == 3 or (seen > 0 and pos == size)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return -1, len(data) + 1  # cut off: not a field


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\r\n" for ch in text)


def check_model_file(path: str | Path, flag: str) -> FileKind:
    """A one-line CheckpointError unless ``path`` is a file of the kind ``flag`` takes: ``--model``
    a trd ``model.pt``, ``--onnx`` an ONNX export, ``--model-or-onnx`` either (``trd serve``).
    Cheap and torch-free: the CLI calls it before any heavy import. Returns what the file is."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, expected a checkpoint file (e.g. RUN/model.pt)"
                              if flag != "--onnx" else "is a folder, expected an ONNX file (trd export)")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found" if flag != "--onnx" else "ONNX file not found")
    found = sniff(path)
    if flag == "--onnx":
        if found.kind == "trd":
            raise CheckpointError(path, f"{found.what}, not an ONNX export: give it to --model, or export it "
                                        f"first (trd export --model {path} --out {path.with_suffix('.onnx')})")
        if found.kind not in ("onnx", "unknown"):  # unknown bytes: onnxruntime says what is wrong with them
            raise CheckpointError(path, f"{found.what}, not an ONNX export (trd export writes one)")
        return found
    named_onnx = found.kind == "unknown" and path.suffix.lower() == ".onnx"  # onnxruntime says what is wrong
    if flag == "--model-or-onnx" and (found.kind == "onnx" or named_onnx):  # trd serve takes either
        return found
    if found.kind == "onnx" and flag == "--model":
        raise CheckpointError(path, f"{found.what}, not a trd model.pt: give it to --onnx (trd predict), or "
                                    "use the model.pt it was exported from")
    if found.kind != "trd":
        raise CheckpointError(path, _not_a_checkpoint(found))
    if found.checkpoint == "train_state":
        raise CheckpointError(path, "is a 'train_state' checkpoint, expected 'model' (a state.pt resumes "
                                    "'trd fit'; the finished model is model.pt in the same run folder)")
    return found


def _not_a_checkpoint(found: FileKind) -> str:
    """The problem with a file that `sniff` found to be no trd checkpoint, and where it goes instead."""
    if found.kind in ("empty", "broken", "unknown"):
        detail = {"empty": "it is empty (0 bytes)", "broken": "its zip directory cannot be read",
                  "unknown": "it is in no format trd knows"}[found.kind]
        return f"not a readable checkpoint (truncated or corrupt?): {detail}"
    return f"{found.what}, not a trd checkpoint{_WHERE.get(found.kind, '')}"
