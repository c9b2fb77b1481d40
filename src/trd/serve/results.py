"""Stored results as answers: the record with its images as PNG data URLs.

Images are drawn once, at the model's resolution, from the arrays the engine returned
(`trd.runtime.heatmap.result_images`: the RGB and 3D inputs as the model saw them, the overlay of
the fused map and of each branch's scored map on one colour scale, the mask) and kept as PNG files
in the record's folder of the store (`trd.workflows.stored`), so any stored result can be shown
again, after a restart too (``GET /v1/results/{id}``).
"""

from __future__ import annotations

import base64
from typing import Any

from ..runtime.heatmap import map_range


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def with_images(answer: dict[str, Any], images: dict[str, bytes], pixel_threshold: float,
                branches: list[str]) -> dict[str, Any]:
    """``answer`` plus its images as PNG data URLs (the fused map first, then ``branches`` in order)
    and the overlays' colour scale: the record's ``heatmap_range`` (it reaches the score), or for
    records stored before they carried one, that of ``pixel_threshold``."""
    vmin, vmax = map_range(pixel_threshold)
    if isinstance(answer.get("heatmap_range"), dict):
        vmin, vmax = answer["heatmap_range"]["vmin"], answer["heatmap_range"]["vmax"]
    views = {name[len("view-"):-4]: _data_url(png) for name, png in images.items() if name.startswith("view-")}
    maps = {name[len("heatmap-"):-4]: _data_url(png) for name, png in images.items() if name.startswith("heatmap-")}
    order = ["fused", *branches]
    return answer | {"images": {k: views[k] for k in ("rgb", "3d") if k in views},
                     "heatmaps": dict(sorted(maps.items(), key=lambda m: order.index(m[0]) if m[0] in order else 99)),
                     "heatmap_range": {"vmin": vmin, "vmax": vmax}}
