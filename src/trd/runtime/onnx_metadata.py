"""A copy of an ONNX file with some of its metadata entries replaced, without the onnx package.

The runtime install has onnxruntime but not onnx (which only the training install needs, to
export). An ONNX file is a protobuf ``ModelProto`` whose ``metadata_props`` (field 14) are
key/value entries; this module copies every top-level field as it is, drops the entries being
replaced and appends the new ones, streaming from a memory map so even a multi-GB model is never
held in memory twice. Used by `trd serve` to write a model file with a threshold set by hand
(`trd.workflows.threshold`).
"""

from __future__ import annotations

import mmap
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from ..atomic import atomic_save
from ..errors import CheckpointError

_METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1, value = 2}
_LENGTH_DELIMITED = 2


def _varint(data: bytes | mmap.mmap | memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def metadata_entry(key: str, value: str) -> bytes:
    """One ``metadata_props`` entry, encoded as a top-level field of ``ModelProto``."""
    return _field(_METADATA_PROPS, _field(1, key.encode()) + _field(2, value.encode()))


def _entry_key(payload: bytes | memoryview) -> str | None:
    """The key of an encoded StringStringEntryProto (None when it has none)."""
    pos = 0
    while pos < len(payload):
        tag, pos = _varint(payload, pos)
        if tag & 7 != _LENGTH_DELIMITED:
            raise ValueError("unexpected field in a metadata entry")
        length, pos = _varint(payload, pos)
        if tag >> 3 == 1:
            return bytes(payload[pos:pos + length]).decode()
        pos += length
    return None


def _fields(data: mmap.mmap) -> list[tuple[int, int, int, str | None]]:
    """(field number, start, end, metadata key or None) of every top-level field."""
    out, pos = [], 0
    with memoryview(data) as view:
        while pos < len(data):
            start = pos
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            key = None
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == _LENGTH_DELIMITED:
                length, pos = _varint(data, pos)
                if number == _METADATA_PROPS:
                    key = _entry_key(view[pos:pos + length])
                pos += length
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos > len(data) or number == 0:
                raise ValueError("truncated field")
            out.append((number, start, pos, key))
    return out


def copy_with_metadata(src: Path, out: Path, entries: Mapping[str, str]) -> None:
    """Write ``out`` (atomically): ``src`` with the metadata ``entries`` set (replacing entries of the
    same keys, keeping every other field). CheckpointError when ``src`` is not a protobuf model."""
    if not src.is_file() or src.stat().st_size == 0:
        raise CheckpointError(src, "ONNX file not found or empty")
    with src.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            fields = _fields(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(src, f"not a readable ONNX model ({exc})") from None

        def write(target: IO[bytes]) -> None:
            with memoryview(data) as view:  # slices of the map: no copy of the weights
                for number, start, end, key in fields:
                    if not (number == _METADATA_PROPS and key in entries):
                        target.write(view[start:end])
            for key, value in entries.items():
                target.write(metadata_entry(key, value))

        atomic_save(out, write)
