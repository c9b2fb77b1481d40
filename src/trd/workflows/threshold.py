"""A new model file with an image threshold set by hand (the review page's threshold explorer).

The served model is never changed: the new file is written beside it (or into a folder the service
was given) under a new name, atomically, with the threshold's promise recomputed from the model's
validation scores (`trd.scoring.threshold.Thresholds.with_image`). ONNX files are copied with new
metadata (`trd.runtime.onnx_metadata`, no onnx package needed); a ``model.pt`` needs torch
(`trd.calibration.write_image_threshold`).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

from ..errors import ConfigError
from ..runtime.onnx_metadata import copy_with_metadata
from ..runtime.ort import META_KEYS
from ..scoring.threshold import Thresholds
from .engine import LoadedModel


def new_model_name(model_file: Path, value: float) -> str:
    """E.g. ``puck.threshold-3.25-1a2b3c4d.onnx``: the threshold and a random part, so no file is replaced."""
    return f"{model_file.stem}.threshold-{value:.6g}-{uuid.uuid4().hex[:8]}{model_file.suffix}"


def write_threshold(model: LoadedModel, value: float, folder: Path | None = None) -> tuple[Path, Thresholds]:
    """Write ``model`` with image threshold ``value`` to a new file in ``folder`` (default: beside
    the model); (its path, its thresholds). ConfigError for a value that cannot be applied."""
    scores = model.validation_scores
    if not scores:
        raise ConfigError("this model carries no validation scores (an older trd wrote it), so a typed threshold's "
                          "promise cannot be computed; run `trd calibrate` first")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"image threshold must be a number, got {value!r}")
    old = model.thresholds
    source = f"{old.source or 'validation'}; image threshold {value:.6g} set by hand (was {old.image:.6g})"
    new = old.with_image(float(value), scores, source)
    src = model.files[0]
    out = (folder or src.parent) / new_model_name(src, value)
    if src.suffix.lower() == ".onnx":
        data = src.with_name(src.name + ".data")
        if data.exists() and out.parent.resolve() != src.parent.resolve():
            raise ConfigError(f"{src.name} keeps its weights in {data.name}, which the new file refers to by name: "
                              "it can only be written beside the served model")
        copy_with_metadata(src, out, {META_KEYS["thresholds"]: json.dumps(new.to_dict())})
    else:
        from ..calibration import write_image_threshold

        write_image_threshold(src, out, new)
    return out, new
