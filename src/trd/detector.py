"""Detector: the deployable model = TRDModel (raw per-branch maps) + Scorer (z-score, fuse, blur, max).

Pure PyTorch, eval mode, no host round trips: this is what ``trd test``/``predict`` run and what
``trd export`` writes to ONNX. ``model.pt`` stores it together with its config and thresholds.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from .config import Config, validate_config
from .errors import CheckpointError, ConfigError, TRDError
from .model.trd import TRDModel, build_model
from .scoring.maps import Scorer
from .scoring.threshold import Thresholds


class Detector(nn.Module):
    """(rgb, x3d) -> {"anomaly_map", "score", "map_<branch>", "contrib_<branch>", "scored_<branch>"}.

    ``map_<branch>`` are the raw per-branch cosine maps, ``scored_<branch>`` the same maps as the
    scorer sees them (z-scored, blurred, restricted); ``contrib_<branch>`` says how much of the
    image score comes from each branch (they add up to ``score``). The ONNX export keeps all but
    ``scored_<branch>`` (`trd.export.onnx.output_names`).
    """

    def __init__(self, model: TRDModel, scorer: Scorer) -> None:
        super().__init__()
        self.model = model
        self.scorer = scorer

    @property
    def branches(self) -> list[str]:
        return list(self.model.students)

    def forward(self, rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        maps = self.model.raw_maps(rgb, x3d)
        out = self.scorer(maps, self.scorer.foreground(x3d))
        out.update({f"map_{name}": m for name, m in maps.items()})
        return out


def _teachers(model: TRDModel) -> dict[str, nn.Module | None]:
    """The model's teachers by branch name (None where the variant has none)."""
    return {"rgb": model.teacher_rgb, "geo": model.teacher_geo}


def save_detector(path: str | Path, detector: Detector, cfg: Config, thresholds: Thresholds,
                  extra: dict[str, Any] | None = None) -> None:
    """Write ``model.pt``. Teacher weights are included unless they are torchvision's ImageNet ones,
    which every user can rebuild (keeps the file half the size)."""
    model = detector.model
    teachers = None
    if cfg.model.weights != "imagenet":
        teachers = {name: t.state_dict() for name, t in _teachers(model).items() if t is not None}
    save_checkpoint(path, "model", {
        "config": cfg.to_dict(),
        "students": model.students.state_dict(),
        "teachers": teachers,
        "scorer": detector.scorer.state_dict(),
        "thresholds": dataclasses.asdict(thresholds),
        "extra": extra or {},
    })


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, Config, Thresholds, dict[str, Any]]:
    """Rebuild the detector from ``model.pt`` in eval mode on ``device``."""
    blob = load_checkpoint(path, "model", map_location="cpu")
    try:
        thresholds = Thresholds.from_dict(blob["thresholds"])
    except (TRDError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"damaged thresholds entry: {exc}") from None
    try:
        cfg = validate_config(Config.from_dict(blob["config"], source=str(path)), source=str(path))
        model_cfg = cfg.model
        if blob["teachers"] is not None:
            # Weights come from the checkpoint: build randomly initialised teachers, then overwrite them.
            model_cfg = dataclasses.replace(cfg.model, weights="none")
        with warnings.catch_warnings():
            if blob["teachers"] is not None:
                warnings.simplefilter("ignore")
            model = build_model(model_cfg, cfg.data.image_size)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        raise CheckpointError(path, f"its config cannot be built: {message}") from None
    load_state_dict_strict(model.students, blob["students"], path, "student weights")
    teachers = _teachers(model)
    for name, state in (blob["teachers"] or {}).items():
        if teachers.get(name) is None:
            raise CheckpointError(path, f"holds weights of a {name!r} teacher that this model does not have")
        load_state_dict_strict(teachers[name], state, path, f"{name} teacher weights")
    scorer = Scorer.from_config(list(model.students), cfg.score)
    load_state_dict_strict(scorer, blob["scorer"], path, "scorer statistics")
    detector = Detector(model, scorer).to(device).eval()
    return detector, cfg, thresholds, blob["extra"]
