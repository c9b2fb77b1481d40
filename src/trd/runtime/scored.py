"""What scoring one sample leaves behind, made the same way wherever it was scored.

`score_batch` runs an engine on a batch read by `trd.runtime.batches` and makes, for each sample,
its record (`trd.runtime.records.build_record`, with the paths of its heatmap and mask inside the
output folder) and the PNG bytes of both images. `trd predict` calls it in its own process and
the Ray workers of ``trd predict --ray`` (`trd.runtime.batch_scorer`) call it on other machines;
whoever writes the output folder writes the two PNGs, then appends the record, so both kinds of run
leave the same files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..scoring.threshold import Thresholds
from .batches import Batch
from .heatmap import map_range, overlay, png_bytes
from .records import build_record

Engine = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Target:
    """How a sample is named in the output folder: ``name`` (the record's), the input paths as the
    record shows them, and ``stem``, the file name of its heatmap and mask."""

    name: str
    rgb: str
    xyz: str
    stem: str

    @property
    def heatmap(self) -> str:
        return f"heatmaps/{self.stem}.png"

    @property
    def mask(self) -> str:
        return f"masks/{self.stem}.png"


@dataclass
class Scored:
    """One scored sample: ``index`` into the targets of its batch's sample list, its record, and
    its heatmap and mask as PNG bytes (to be written at ``record["heatmap"]``/``["mask"]``)."""

    index: int
    record: dict[str, Any]
    heatmap: bytes
    mask: bytes


def score_batch(engine: Engine, batch: Batch, targets: Sequence[Target], thresholds: Thresholds,
                model: Mapping[str, str]) -> list[Scored]:
    """Score ``batch`` (whose ``indices`` point into ``targets``); ``model``: the record's model
    entry (`trd.runtime.records.model_record`). Timings: ``read`` and ``score`` per sample, and
    ``total`` so far (the writer adds the time it takes to write)."""
    if not batch.indices:
        return []
    start = time.perf_counter()
    out = engine(batch.rgb, batch.x3d)
    score_ms = (time.perf_counter() - start) * 1e3 / len(batch.indices)
    maps = out["anomaly_map"][:, 0]
    vmin, vmax = map_range(thresholds.pixel)
    scored = []
    for j, index in enumerate(batch.indices):
        drawn = time.perf_counter()
        target = targets[index]
        heatmap = png_bytes(overlay(batch.display[j], maps[j], vmin, vmax))
        mask = png_bytes((maps[j] > thresholds.pixel).astype(np.uint8) * 255)
        timings = {"read": batch.read_ms[j], "score": score_ms,
                   "total": batch.read_ms[j] + score_ms + (time.perf_counter() - drawn) * 1e3}
        record = build_record(out, j, name=target.name, rgb=target.rgb, xyz=target.xyz, thresholds=thresholds,
                              model=model, timings_ms=timings) | {"heatmap": target.heatmap, "mask": target.mask}
        scored.append(Scored(index, record, heatmap, mask))
    return scored
