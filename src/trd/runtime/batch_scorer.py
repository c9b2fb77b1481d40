"""A batch scorer for Ray Data's ``map_batches``: the worker side of ``trd predict --ray``.

Ray creates one `BatchScorer` per worker (a class-based UDF: the model is loaded once per worker,
not per batch) and calls it with batches of rows ``{"index", "sample", "target"}`` (JSON of a
`trd.data.samples.Sample` and of a `trd.runtime.scored.Target`, as `sample_row` writes them). It
reads the files, scores them and answers one row per sample: ``index``, ``record`` (the JSON record
`trd predict` writes), ``heatmap`` and ``mask`` (PNG bytes), or ``error`` for a sample whose files
cannot be read. It writes nothing: Ray may run a batch twice when a worker dies (execution is
at-least-once), so the driver alone writes the output folder, one record per scan. Ray itself is
not imported here; every node needs the model file and the input files at the same paths (a
shared file system), and the model's content is checked on each worker against the driver's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..config import apply_input_overrides
from ..data.identity import content_key, model_sha256
from ..data.samples import Sample
from ..errors import CheckpointError
from .batches import load_batch
from .ort import open_onnx
from .records import Baseline
from .scored import Target, score_batch

_PATHS = ("rgb", "xyz", "mask", "camera")


def sample_row(index: int, sample: Sample, target: Target) -> dict[str, Any]:
    """The row of ``sample`` (number ``index`` of the driver's list) that `BatchScorer` reads."""
    fields = {k: (str(v) if k in _PATHS and v is not None else v) for k, v in dataclasses.asdict(sample).items()}
    return {"index": index, "sample": json.dumps(fields), "target": json.dumps(dataclasses.asdict(target))}


def _sample(text: str) -> Sample:
    fields = json.loads(text)
    return Sample(**{k: (Path(v) if k in _PATHS and v is not None else v) for k, v in fields.items()})


class BatchScorer:
    """Scores batches of rows on one worker (see the module's text).

    ``onnx_path``: the export every node reads; ``sha256``: its content as the driver hashed it
    (`trd.data.identity.model_sha256` of the file and its ``.data``); ``model``: the record's model
    entry (the worker fills in the provider and precision it runs with); ``ep``, ``precision``,
    ``threads``, ``max_batch``: as `trd.runtime.ort.open_onnx`; ``xyz_unit``, ``flip_z``: input
    overrides, as predict's; ``all_images``: every picture the result store keeps, not only the
    output folder's.
    """

    def __init__(self, onnx_path: str, sha256: str, model: dict[str, str], ep: str = "auto", precision: str = "fp32",
                 threads: int = 1, max_batch: int = 8, xyz_unit: str | None = None,
                 flip_z: bool | None = None, all_images: bool = False) -> None:
        path = Path(onnx_path)
        if not path.is_file():
            raise CheckpointError(path, "ONNX file not found on this worker (every node needs it at the same path)")
        if model_sha256(path, path.with_name(path.name + ".data"), missing_ok=True) != sha256:
            raise CheckpointError(path, "this worker's copy differs from the driver's (another model at the same path)")
        # with its identity a CPU session loads the optimised graph saved by an earlier start
        self.engine = open_onnx(path, threads, sha256, ep=ep, precision=precision, max_batch=max_batch)
        apply_input_overrides(self.engine.config, xyz_unit, flip_z)
        self.model = dict(model) | {"provider": self.engine.provider, "precision": self.engine.precision}
        self.baseline = Baseline.of(self.engine.validation_scores, self.engine.inputs)
        self.all_images = all_images

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = [_sample(str(text)) for text in rows["sample"]]
        targets = [Target(**json.loads(str(text))) for text in rows["target"]]
        batch = load_batch(samples, range(len(samples)), self.engine.config.data, reference=self.engine.inputs)
        for i in batch.indices:  # unreadable when the driver listed it, read now
            if not targets[i].key:
                targets[i] = dataclasses.replace(targets[i], key=content_key(samples[i].rgb, samples[i].xyz,
                                                                            samples[i].camera))
        scored = score_batch(self.engine, batch, targets, self.engine.config, self.engine.thresholds, self.model,
                             self.baseline, self.all_images)
        answers = {s.index: (json.dumps(s.record), list(s.images), list(s.images.values()), "") for s in scored}
        answers |= {i: ("", [], [], message) for i, message in batch.errors}
        order = sorted(answers)

        def column(k: int) -> np.ndarray:  # one object per row (a list stays a list)
            values = np.empty(len(order), object)
            values[:] = [answers[i][k] for i in order]
            return values

        return {"index": np.array([int(rows["index"][i]) for i in order], np.int64), "record": column(0),
                "names": column(1), "images": column(2), "error": column(3)}
