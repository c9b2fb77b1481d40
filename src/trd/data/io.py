"""Reading images (RGB, masks) with validation, the helpers every file reader shares, and writing
dataset folders all at once. 3D files have their own readers, one module per kind (`trd.data.readers`).

Every reader raises :class:`trd.errors.DataError` (file path + a one-line problem) for anything it
cannot turn into a well-formed array, so a bad file never ends in a numpy/PIL/tifffile traceback.
Images are HxW(x3).

Files are refused rather than read wrongly: an image larger than ``max_pixels`` is refused from its
declared size before anything is decoded (a small compressed file can declare gigabytes); a PNG
whose compressed data ends before its last row is refused (PIL would fill the missing rows with black).

Speed (issue 24): the PNGs scanners write (8-bit grey, RGB or RGBA, not interlaced) are decoded
once, by libspng (through imagecodecs, already a dependency of tifffile's compressed TIFFs), which
refuses image data that ends before the last row by itself; Pillow then decompressed them twice (once
to decode, once more for that check) and took 2.8x the CPU time. Any file libspng does not decode
goes the Pillow way, so its error message is the one it always had.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from ..errors import DataError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: Default limit on the pixels of one image or 3D file (8000 x 8000); `data.max_image_pixels` sets it.
DEFAULT_MAX_PIXELS = 64_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@contextlib.contextmanager
def reading(path: Path, expected: str, undecodable: str) -> Iterator[None]:
    """Turn every failure of a file-reading library call into a DataError naming ``path``."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, f"is a folder, expected {expected}") from None
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"{undecodable}: {exc}") from None


def pixels(n: int) -> str:
    """A pixel count as people read it: Mpx with the digits that tell two counts apart, else pixels
    (a limit of 4096 pixels is not "0.0 Mpx").

    Example:
        >>> pixels(64_000_000), pixels(5120), pixels(16_040_100)
        ('64 Mpx', '5120 px', '16.0401 Mpx')
    """
    return f"{n / 1e6:g} Mpx" if n >= 1_000_000 else f"{n} px"


def over_limit(count: int, limit: int) -> str:
    """"N is over the limit of M" with numbers that differ where the counts do."""
    shown, allowed = pixels(count), pixels(limit)
    if shown == allowed:
        shown, allowed = f"{count} px", f"{limit} px"
    return f"{shown} is over the limit of {allowed}"


def check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise DataError(path, f"{width}x{height} = {over_limit(height * width, max_pixels)} "
                              "(data.max_image_pixels; raise it if such files are expected)")


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) an image file declares in its header, read without decoding its pixels; a
    DataError naming the file when it is not an image."""
    path = Path(path)
    with reading(path, "an image file", "cannot decode image (corrupt or truncated?)"), _own_size_limit():
        with Image.open(path) as im:
            return im.height, im.width


def _png_expected_bytes(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Length of the decompressed image data of a PNG (filter byte + packed samples per row)."""
    bits = _PNG_CHANNELS.get(colour, 0) * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pass_w = (width - x0 + dx - 1) // dx if width > x0 else 0
        pass_h = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pass_w and pass_h:
            total += pass_h * (1 + (pass_w * bits + 7) // 8)
    return total


def _check_png_stream(path: Path, data: bytes) -> None:
    """Refuse a PNG whose image data stops short of its declared rows (PIL decodes it silently with
    black rows). Walks the chunks, inflates the IDAT data and compares its length with the header's."""
    pos, header, stream = 8, None, zlib.decompressobj()
    produced = 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos: pos + 8])
        body = data[pos + 8: pos + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            produced += len(stream.decompress(body))
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        return  # PIL reports a missing header itself
    width, height, depth, colour, _, _, interlace = header
    expected = _png_expected_bytes(width, height, depth, colour, interlace)
    if produced < expected or not stream.eof:
        raise DataError(path, f"cannot decode image (corrupt or truncated?): its pixel data ends early "
                              f"({produced} of {expected} bytes)")


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image, turning every failure into a DataError.

    The declared size is checked against ``max_pixels`` before decoding; PNG data is checked for
    completeness (`_check_png_stream`).
    """
    path = Path(path)
    # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
    with reading(path, "an image file", "cannot decode image (corrupt or truncated?)"), _own_size_limit():
        with Image.open(path) as im:
            check_size(path, im.height, im.width, max_pixels)
            if im.format == "PNG":
                _check_png_stream(path, path.read_bytes())
            im.load()
            return im.copy()


@contextlib.contextmanager
def _own_size_limit() -> Iterator[None]:
    """PIL's global decompression-bomb limit replaced by ours (`_check_size`) for one read: its
    warning would add a second line to our one-line error, and its error would hide our message."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _sixteen_to_eight(path: Path, arr: np.ndarray) -> np.ndarray:
    """Scale a 16-bit grey image (0..65535) linearly to 0..255."""
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(path, f"integer image values {arr.min()}..{arr.max()} are outside the 16-bit range")
    return np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)


def _plain_png(path: Path, max_pixels: int) -> np.ndarray | None:
    """An 8-bit grey, RGB or RGBA PNG (not interlaced) as uint8 HxWx3, decoded once by libspng;
    None for any other file, or one libspng refuses (`read_rgb` then takes the Pillow way)."""
    with reading(path, "an image file", "cannot decode image (corrupt or truncated?)"):
        with path.open("rb") as fh:
            head = fh.read(33)
            if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
                return None
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
            if depth != 8 or colour not in (0, 2, 6) or interlace:
                return None
            check_size(path, height, width, max_pixels)
            data = head + fh.read()
    try:
        arr = imagecodecs.spng_decode(data)
    except Exception:  # noqa: BLE001 - corrupt or truncated: the Pillow way says what is wrong
        return None
    if arr.dtype != np.uint8 or arr.shape[:2] != (height, width) or arr.size == 0:
        return None
    return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3])


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a colour image as uint8 HxWx3.

    Grey (L), grey+alpha (LA), RGBA, palette (P) and other 8-bit modes are converted to RGB; any
    alpha channel is dropped, not composited. 16-bit grey images (modes I;16 / I) are scaled
    linearly from 0..65535 to 0..255 and repeated on the 3 channels.
    """
    path = Path(path)
    plain = _plain_png(path, max_pixels)
    if plain is not None:
        return plain
    im = open_image(path, max_pixels)
    if im.mode in SIXTEEN_BIT_MODES:
        grey = _sixteen_to_eight(path, np.asarray(im))
        arr = np.repeat(grey[:, :, None], 3, axis=2)
    elif im.mode == "F" or im.mode.startswith("I;"):
        raise DataError(path, f"unsupported image mode {im.mode} for an RGB image")
    else:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(path, "image is empty (0 pixels)")
    return np.ascontiguousarray(arr, dtype=np.uint8)


class MaskWarning(UserWarning):
    """A ground-truth mask that is probably not what its author meant (not 0/255, inverted, lossy)."""


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a ground-truth mask as bool HxW: any value > 0 (in any colour channel) is defect.

    Accepts 1-bit, 8-bit grey, palette, RGB(A) and 16-bit masks; alpha channels are ignored. If
    ``shape`` (H, W) is given the mask must have exactly that size. A mask whose values are not
    just 0 and one "on" value, or that marks more than half of the image, is read the same way but
    warned about (`MaskWarning`): a JPEG-compressed, inverted or background-1 mask changes the
    pixel metrics without any error.
    """
    path = Path(path)
    im = open_image(path, max_pixels)
    if im.mode in ("1", "P", "PA", "LA", "CMYK", "YCbCr", "HSV", "LAB"):
        im = im.convert("L")
    elif im.mode in ("RGBA", "RGBX", "RGBa"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    mask = arr > 0
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(
            path, f"mask is {mask.shape[0]}x{mask.shape[1]} but its image is {shape[0]}x{shape[1]}"
        )
    problem = _mask_problem(arr, mask)
    if problem:
        warnings.warn(MaskWarning(f"{path}: {problem}; every value > 0 counts as defect"), stacklevel=2)
    return mask


def _mask_problem(values: np.ndarray, mask: np.ndarray) -> str:
    """Why a mask looks unintended ("" when it is a clean binary mask of a minority of pixels)."""
    levels = np.unique(values)
    if levels.size > 2:
        shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if levels.size > 6 else "")
        return f"mask has {levels.size} grey levels ({shown}), not just 0 and 255 (lossy compression or anti-aliasing?)"
    if levels.size == 2 and levels[0] != 0:
        return f"mask has no 0 pixels (values {levels[0]} and {levels[1]}): the whole image counts as defect"
    if mask.mean() > 0.5:
        return f"mask marks {100 * mask.mean():.0f}% of the image as defect (inverted mask?)"
    return ""


def check_pair(
    rgb_path: str | Path, rgb_shape: tuple[int, ...], xyz_path: str | Path, xyz_shape: tuple[int, ...]
) -> None:
    """Refuse an RGB image and its 3D file whose HxW sizes differ (the maps must align pixel-wise)."""
    if tuple(rgb_shape[:2]) != tuple(xyz_shape[:2]):
        raise DataError(
            rgb_path,
            f"RGB image is {rgb_shape[0]}x{rgb_shape[1]} but its 3D file {xyz_path} is "
            f"{xyz_shape[0]}x{xyz_shape[1]}; they must have the same size",
        )


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder next to ``target``; on success it replaces ``target`` whole.

    Used to write a dataset category so an interrupted run leaves the old folder (or none), never a
    half-written one. On failure the staging folder is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
