"""What scoring one sample leaves behind, made the same way wherever it was scored.

`score_batch` runs an engine on a batch read by `trd.runtime.batches` and makes, for each sample,
its record (`trd.runtime.records.build_record`: the decision with its defect regions
(`trd.runtime.findings`), p-value and input health, and the paths of its pictures inside the output
folder) and the PNG bytes of those pictures. `trd predict` calls it in its own process and the Ray
workers of ``trd predict --ray`` (`trd.runtime.batch_scorer`) call it on other machines; whoever
writes the output folder writes the pictures, then appends the record, so both kinds of run leave
the same files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config
from .batches import Batch
from .findings import find
from .heatmap import draw_outlines, map_range, overlay, png_bytes, result_images, sample_maps
from .records import Baseline, build_record

Engine = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]

#: Hex digits of the content key in output file names (48 bits: names of one folder never collide).
KEY_CHARS = 12
#: The pictures of a scored sample an output folder keeps, by the record key that names each file.
PICTURES = {"heatmap": "heatmap-fused.png", "mask": "mask.png", "outline": "outline.png"}


@dataclass(frozen=True)
class Target:
    """How a sample is named: ``name`` (the record's), the input paths as the record shows them, and
    ``key``, the scan's content key (`trd.data.identity.content_key`); its pictures are
    ``<folder>/<name>-<key[:12]>.png`` (a rewritten ``latest.png`` gets files of its own)."""

    name: str
    rgb: str
    xyz: str
    key: str

    def path(self, what: str) -> str:
        """Where picture ``what`` ("heatmap", "mask", "outline") goes in the output folder."""
        return f"{what}s/{self.name}-{self.key[:KEY_CHARS]}.png"


@dataclass
class Scored:
    """One scored sample: ``index`` into the targets of its batch's sample list, its record, and
    its pictures as PNG bytes by file name (``heatmap-fused.png``, ``mask.png``, ``outline.png``;
    with ``all_images`` also the inputs as the model saw them and each branch's heatmap, as the
    result store keeps them)."""

    index: int
    record: dict[str, Any]
    images: dict[str, bytes]


def score_batch(engine: Engine, batch: Batch, targets: Sequence[Target], config: Config, thresholds: Any,
                model: Mapping[str, str], baseline: Baseline | None = None, all_images: bool = False) -> list[Scored]:
    """Score ``batch`` (whose ``indices`` point into ``targets``) with a model of ``config`` and
    ``thresholds``; ``model``: the record's model entry (`trd.runtime.records.model_record`);
    ``baseline``: what the p-value and input health compare with. Timings: ``read``, ``score`` and
    ``regions`` per sample, and ``total`` so far (the writer adds the time it takes to write)."""
    if not batch.indices:
        return []
    start = time.perf_counter()
    out = engine(batch.rgb, batch.x3d)
    score_ms = (time.perf_counter() - start) * 1e3 / len(batch.indices)
    maps = out["anomaly_map"][:, 0]
    scored = []
    for j, index in enumerate(batch.indices):
        measured = time.perf_counter()
        target = targets[index]
        score = float(out["score"][j])
        found = find(maps[j], score, batch.images[j].shape[:2], batch.clouds[j], config, thresholds)
        regions_ms = (time.perf_counter() - measured) * 1e3
        if all_images:
            images = result_images(batch.display[j], batch.display_3d[j], sample_maps(out, j), thresholds.pixel, score)
        else:
            vmin, vmax = map_range(thresholds.pixel, score)
            images = {"heatmap-fused.png": png_bytes(overlay(batch.display[j], maps[j], vmin, vmax)),
                      "mask.png": png_bytes((maps[j] > thresholds.pixel).astype(np.uint8) * 255)}
        drawn = [(r.outline, found.rules.failure(r) is None) for r in found.regions]
        images["outline.png"] = png_bytes(draw_outlines(batch.images[j], drawn))
        timings = {"read": batch.read_ms[j], "score": score_ms, "regions": regions_ms,
                   "total": batch.read_ms[j] + score_ms + (time.perf_counter() - measured) * 1e3}
        record = build_record(out, j, name=target.name, key=target.key, rgb=target.rgb, xyz=target.xyz,
                              thresholds=thresholds, findings=found, model=model, timings_ms=timings,
                              baseline=baseline, health=batch.health[j])
        scored.append(Scored(index, record | {what: target.path(what) for what in PICTURES}, images))
    return scored
