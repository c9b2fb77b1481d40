"""Reading dataset files with validation, and writing dataset folders all at once.

Every reader raises :class:`trd.errors.DataError` (file path + a one-line problem) for anything it
cannot turn into a well-formed array, so a bad file never ends in a numpy/PIL/tifffile traceback.
Conventions: images are HxW(x3); point clouds are organised float32 HxWx3 (x, y, z) where a missing
point is (0, 0, 0), as in MVTec 3D-AD (units: see `trd.data.clouds`).

Files are refused rather than read wrongly: an image or cloud larger than ``max_pixels`` is refused
from its declared size before anything is decoded (a small compressed file can declare gigabytes);
a PNG whose compressed data ends before its last row is refused (PIL would fill the missing rows
with black); compressed TIFFs (LZW, deflate, ...) are decoded with imagecodecs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import DataError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: Default limit on the pixels of one image or cloud (8000 x 8000); `data.max_image_pixels` sets it.
DEFAULT_MAX_PIXELS = 64_000_000
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


@contextlib.contextmanager
def _reading(path: Path, expected: str, undecodable: str) -> Iterator[None]:
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


def _check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise DataError(path, f"{width}x{height} = {height * width / 1e6:.1f} Mpx is over the limit of "
                              f"{max_pixels / 1e6:.1f} Mpx (data.max_image_pixels; raise it if such files are expected)")


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


def _open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image, turning every failure into a DataError.

    The declared size is checked against ``max_pixels`` before decoding; PNG data is checked for
    completeness (`_check_png_stream`).
    """
    path = Path(path)
    # PIL raises OSError, SyntaxError, ValueError, zlib.error, ...
    with _reading(path, "an image file", "cannot decode image (corrupt or truncated?)"), _own_size_limit():
        with Image.open(path) as im:
            _check_size(path, im.height, im.width, max_pixels)
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


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a colour image as uint8 HxWx3.

    Grey (L), grey+alpha (LA), RGBA, palette (P) and other 8-bit modes are converted to RGB; any
    alpha channel is dropped, not composited. 16-bit grey images (modes I;16 / I) are scaled
    linearly from 0..65535 to 0..255 and repeated on the 3 channels.
    """
    path = Path(path)
    im = _open_image(path, max_pixels)
    if im.mode in _SIXTEEN_BIT_MODES:
        grey = _sixteen_to_eight(path, np.asarray(im))
        arr = np.repeat(grey[:, :, None], 3, axis=2)
    elif im.mode == "F" or im.mode.startswith("I;"):
        raise DataError(path, f"unsupported image mode {im.mode} for an RGB image")
    else:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(path, "image is empty (0 pixels)")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_normals_png(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an Eyecandies normal-map PNG as float32 HxWx3 in [0, 1] (handled like an RGB image)."""
    return read_rgb(path, max_pixels).astype(np.float32) / np.float32(255.0)


class _Collect(logging.Handler):
    """Keeps the messages of the log records it receives."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # tifffile prefixes the repr of its object ("<tifffile.TiffPages @8> invalid offset ..."): drop it
        text = re.sub(r"^<[^>]*>\s*", "", record.getMessage()).strip()
        self.messages.append(text.splitlines()[0] if text else record.levelname)


@contextlib.contextmanager
def _tifffile_log() -> Iterator[list[str]]:
    """Collect tifffile's log warnings instead of letting them reach stderr.

    Without a configured logging handler Python prints them on stderr, which broke the CLI's
    one-line error for a corrupt TIFF; `read_xyz` puts the first one in its DataError instead.
    """
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler.messages
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def read_xyz(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an organised point cloud TIFF as float32 HxWx3 (any TIFF compression imagecodecs reads).

    Integer clouds are converted to float32. NaN/inf values, a shape other than HxWx3, a declared
    size over ``max_pixels`` and a cloud without a single point (z == 0 everywhere) are refused.
    """
    path = Path(path)
    # tifffile raises TiffFileError, ValueError, struct.error, ...
    with _reading(path, "a TIFF file", "cannot read TIFF (corrupt or truncated?)"), _tifffile_log() as logged:
        with tifffile.TiffFile(path) as tif:
            shape = tif.series[0].shape if tif.series else ()
            if len(shape) >= 2:
                _check_size(path, int(shape[0]), int(shape[1]), max_pixels)
            arr = tif.asarray()
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        why = f" ({logged[0]})" if logged else ""
        raise DataError(path, f"cannot read TIFF: no image data (empty or corrupt file){why}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(path, f"expected an HxWx3 point cloud, found shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(path, f"unsupported point cloud dtype {arr.dtype}, expected float or integer")
    xyz = arr.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(xyz)))
    if bad:
        raise DataError(path, f"{bad} NaN or inf values in the point cloud; store missing points as 0")
    if not np.any(xyz[:, :, 2]):
        raise DataError(path, "no valid points: z is 0 everywhere")
    return xyz


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
    im = _open_image(path, max_pixels)
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


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of a depth camera: focal lengths and principal point in pixels.

    ``depth_scale`` is metres per depth-PNG unit (0.001: the PNG stores millimetres).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    depth_scale: float = 0.001

    def __post_init__(self) -> None:
        problem = _camera_problem({f.name: getattr(self, f.name) for f in fields(self)})
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_json(cls, path: str | Path) -> Camera:
        """Load ``{"fx": .., "fy": .., "cx": .., "cy": .., "depth_scale": ..}`` (depth_scale optional)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            needed = "needed for depth PNGs: fx, fy, cx, cy, depth_scale"
            raise DataError(path, f"camera file not found ({needed})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(path, f"cannot read camera file: {exc}") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(path, "expected a JSON object with keys fx, fy, cx, cy, depth_scale")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise DataError(path, f"unknown camera keys {unknown}; known: {known}")
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in raw]
        if missing:
            raise DataError(path, f"missing camera keys {missing}")
        problem = _camera_problem(raw)
        if problem:
            raise DataError(path, problem)
        return cls(**{k: float(v) for k, v in raw.items()})


def _camera_problem(values: dict[str, object]) -> str:
    """Why these intrinsics are unusable ("" if they are fine)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"camera value {key}={value!r} is not a finite number"
        if key in ("fx", "fy", "depth_scale") and value <= 0:
            return f"camera value {key}={value!r} must be > 0"
    return ""


def read_depth_png(path: str | Path, camera: Camera, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Back-project a 16-bit depth PNG (0 = missing) to an organised float32 HxWx3 cloud in metres.

    Pixel (row v, column u) with depth d becomes (x, y, z) = ((u-cx) z/fx, (v-cy) z/fy, d*depth_scale);
    missing pixels stay (0, 0, 0) as in MVTec 3D-AD clouds.
    """
    path = Path(path)
    im = _open_image(path, max_pixels)
    if im.mode not in _SIXTEEN_BIT_MODES:
        raise DataError(path, f"expected a 16-bit single-channel depth PNG, found mode {im.mode}")
    depth = np.asarray(im).astype(np.float64)
    if depth.min() < 0 or depth.max() > 65535:
        raise DataError(path, f"depth values {depth.min():.0f}..{depth.max():.0f} are outside 0..65535")
    if not np.any(depth):
        raise DataError(path, "no valid depth: every pixel is 0 (missing)")
    z = depth * camera.depth_scale
    rows, cols = np.indices(z.shape, dtype=np.float64)
    xyz = np.stack([(cols - camera.cx) * z / camera.fx, (rows - camera.cy) * z / camera.fy, z], axis=2)
    return xyz.astype(np.float32)


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
