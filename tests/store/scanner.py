"""A line scanner writing scan pairs slowly into a watched folder (a separate process in tests/store/test_watch.py).

``python scanner.py BASE_RGB BASE_XYZ FOLDER N DELAY``: writes N pairs ``rgb/NNNN.png`` + ``xyz/NNNN.tiff``,
each file in two halves with a pause between (a reader sees it growing). Every RGB image is the base
image with pixel (0, 0) set from the pair's number, so every pair is another scan. Pair 50's 3D file
comes last (late); pair 100 is written again with other content after pair 150, once the file
``FOLDER.rewrite`` exists (the test makes it when the first version is scored; that version is kept
as ``FOLDER.first100.png``). Prints ``done`` at the end.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from PIL import Image


def rgb_bytes(base: Image.Image, value: int) -> bytes:
    image = base.copy()
    image.putpixel((0, 0), (value % 256, value // 256, 7))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def slow_write(path: Path, data: bytes, delay: float) -> None:
    with path.open("wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(delay)
        fh.write(data[len(data) // 2:])


def main() -> None:
    base_rgb, base_xyz, folder, n, delay = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), \
        float(sys.argv[5])
    (folder / "rgb").mkdir(parents=True, exist_ok=True)
    (folder / "xyz").mkdir(parents=True, exist_ok=True)
    base, cloud = Image.open(base_rgb).convert("RGB"), base_xyz.read_bytes()
    for i in range(n):
        slow_write(folder / "rgb" / f"{i:04d}.png", rgb_bytes(base, i), delay)
        if i != 50:
            slow_write(folder / "xyz" / f"{i:04d}.tiff", cloud, delay)
        if i == 150:
            while not Path(f"{folder}.rewrite").exists():  # the test says when the first version was scored
                time.sleep(0.05)
            Path(f"{folder}.first100.png").write_bytes((folder / "rgb" / "0100.png").read_bytes())
            slow_write(folder / "rgb" / "0100.png", rgb_bytes(base, 1000), delay)  # rewritten: another scan
    slow_write(folder / "xyz" / "0050.tiff", cloud, delay)  # the late file
    print("done", flush=True)


if __name__ == "__main__":
    main()
