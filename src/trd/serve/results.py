"""Scored requests as answers: the record, its images on request, and the recent results in memory.

Images are drawn at the model's resolution from the arrays the engine returned: the RGB and 3D
inputs as the model saw them, and overlays of the fused map and of each branch's scored map
(``scored_<branch>``: z-scored and smoothed like the fused map, so one colour scale fits all; exports
without them give the fused overlay only). The last ``capacity`` results keep those arrays (a few
hundred KiB each), so ``GET /v1/recent/{id}`` can draw any of them; older ones are dropped.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..runtime.heatmap import overlay, png_bytes


@dataclass
class Result:
    """One answered request: its record (without images) and what its images are drawn from."""

    record: dict[str, Any]
    rgb: np.ndarray  # uint8 S x S x 3, as the model saw it
    image_3d: np.ndarray  # uint8 S x S x 3
    maps: dict[str, np.ndarray]  # "fused" and each branch: S x S, on the fused map's scale
    time: str


def sample_maps(outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """The fused map and each branch's scored map of batch row ``row`` (S x S each)."""
    maps = {"fused": np.asarray(outputs["anomaly_map"][row]).reshape(outputs["anomaly_map"].shape[-2:])}
    for key, value in outputs.items():
        if key.startswith("scored_"):
            maps[key[len("scored_"):]] = np.asarray(value[row]).reshape(value.shape[-2:])
    return maps


def _data_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def with_images(result: Result) -> dict[str, Any]:
    """The record plus its images as PNG data URLs, drawn on the record's colour scale
    (``heatmap_range``, which covers the score)."""
    scale = result.record["heatmap_range"]
    vmin, vmax = scale["vmin"], scale["vmax"]
    return result.record | {
        "images": {"rgb": _data_url(result.rgb), "3d": _data_url(result.image_3d)},
        "heatmaps": {name: _data_url(overlay(result.rgb, amap, vmin, vmax)) for name, amap in result.maps.items()},
    }


class Recent:
    """The last ``capacity`` results, newest first (thread-safe)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex[:16]

    def add(self, result: Result) -> None:
        with self._lock:
            self._items[result.record["id"]] = result
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, result_id: str) -> Result | None:
        with self._lock:
            return self._items.get(result_id)

    def summary(self) -> list[dict[str, Any]]:
        """``{"id", "name", "score", "anomalous", "time"}`` of each kept result, newest first."""
        with self._lock:
            items = list(self._items.values())
        return [{"id": r.record["id"], "name": r.record["name"], "score": r.record["score"],
                 "anomalous": r.record["anomalous"], "time": r.time} for r in reversed(items)]


def utc_now() -> str:
    """The current time, ISO 8601 UTC with milliseconds."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
