"""`read_rgb` decodes the PNGs scanners write once (libspng) and reads every image exactly as Pillow does.

The pixels are Pillow's for every PNG kind, through libspng or not; PNGs whose data is cut short are
refused with the messages they always had (tests/robustness/test_input_checks.py covers the CLI).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.data.io import read_rgb
from trd.errors import DataError


def _pillow_rgb(path: Path) -> np.ndarray:
    """What the Pillow way gives (16-bit grey scaled to 8 bits and repeated, as read_rgb documents)."""
    im = Image.open(path)
    if im.mode.startswith("I"):
        grey = np.round(np.asarray(im).astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(rows: bytes, width: int, height: int, *, compressed: bytes | None = None) -> bytes:
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = zlib.compress(rows) if compressed is None else compressed
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


KINDS = {
    "rgb": lambda a: Image.fromarray(a[..., :3]),
    "rgba": lambda a: Image.fromarray(a),
    "grey": lambda a: Image.fromarray(a[..., 0]),
    "grey with tRNS": lambda a: (Image.fromarray(a[..., 0]), {"transparency": 7}),
    "rgb with tRNS": lambda a: (Image.fromarray(a[..., :3]), {"transparency": (1, 2, 3)}),
    "rgb with an ICC profile": lambda a: (Image.fromarray(a[..., :3]), {"icc_profile": b"\0" * 128}),
    "grey + alpha": lambda a: Image.fromarray(a[..., :2], "LA"),
    "palette": lambda a: Image.fromarray(a[..., :3]).quantize(16),
    "16-bit grey": lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257),
    "1-bit": lambda a: Image.fromarray(a[..., 0] > 127),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_png_kind_reads_as_pillow_reads_it(kind: str, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (37, 23, 4), dtype=np.uint8)
    made = KINDS[kind](pixels)
    image, options = made if isinstance(made, tuple) else (made, {})
    path = tmp_path / "scan.png"
    image.save(path, **options)
    out = read_rgb(path)
    assert out.dtype == np.uint8 and out.shape == (37, 23, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _pillow_rgb(path))


def test_pngs_cut_short_are_refused_as_before(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    rows = b"".join(b"\x00" + row.tobytes() for row in rgb)
    good = tmp_path / "good.png"
    good.write_bytes(_png(rows, 30, 40))
    np.testing.assert_array_equal(read_rgb(good), rgb)
    cases = {
        # a complete zlib stream holding half of the rows: Pillow alone fills the rest with black
        "half.png": (_png(rows[: 20 * 91], 30, 40), "its pixel data ends early (1820 of 3640 bytes)"),
        "cut.png": (good.read_bytes()[:400], "cannot decode image (corrupt or truncated?)"),
        "garbled.png": (_png(rows, 30, 40, compressed=zlib.compress(rows)[:2] + b"\xff" * 50), "cannot decode image"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"{name}.*" + words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
            read_rgb(tmp_path / name)
    extra = tmp_path / "extra.png"  # more data than the rows need: read, as before
    extra.write_bytes(_png(rows + rows[:91], 30, 40))
    np.testing.assert_array_equal(read_rgb(extra), rgb)


def test_a_declared_size_over_the_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(b"", 100_000, 100_000, compressed=zlib.compress(b"\0" * 1000)))
    with pytest.raises(DataError, match=r"bomb.png: 100000x100000 = 10000 Mpx is over the limit"):
        read_rgb(path, max_pixels=64_000_000)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(buffer, "PNG")
    small = tmp_path / "small.png"
    small.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="over the limit"):
        read_rgb(small, max_pixels=99)
