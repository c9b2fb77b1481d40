"""Detector: the deployable model = TRDModel (raw per-branch maps) + Scorer (z-score, fuse, blur, max).

Pure PyTorch, eval mode, no host round trips: this is what ``trd test``/``predict`` run and what
``trd export`` writes to ONNX. ``model.pt`` stores it together with its config, its thresholds and
the good validation inputs that modality attribution (:meth:`Detector.explain`) takes nominal content from.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from ..config import Config, validate_config
from ..errors import CheckpointError, ConfigError, TRDError
from ..model.trd import TRDModel, build_model
from .counterfactual import nominal_inputs
from ..scoring.maps import Scorer
from ..scoring.threshold import Thresholds


#: Modality attribution: each modality and the input that stands for it.
MODALITY_INPUTS = {"colour": "rgb", "geometry": "x3d"}


class Detector(nn.Module):
    """(rgb, x3d) -> {"anomaly_map", "score", "map_<branch>", "share_<branch>", "scored_<branch>"}.

    ``map_<branch>`` are the raw per-branch cosine maps, ``scored_<branch>`` the same maps as the
    scorer sees them (z-scored, blurred, restricted); ``share_<branch>`` says how much of the image
    score comes from each BRANCH (they add up to ``score``; not a modality's share, since each
    branch sees both modalities). The ONNX export keeps all but ``scored_<branch>``
    (`trd.export.onnx.output_names`). ``reference``: the good inputs of :meth:`explain`
    (``{"rgb": KxCxSxS, "x3d": KxCxSxS}``, up to `BANK_SIZE` validation inputs) or None.
    """

    def __init__(self, model: TRDModel, scorer: Scorer, reference: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        self.model = model
        self.scorer = scorer
        self.reference = reference

    @property
    def branches(self) -> list[str]:
        return list(self.model.students)

    def forward(self, rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        maps = self.model.raw_maps(rgb, x3d)
        out = self.scorer(maps, self.scorer.foreground(x3d))
        out.update({f"map_{name}": m for name, m in maps.items()})
        return out

    def explain(self, rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        """``forward``'s outputs plus modality attribution, ``attribution_colour`` and
        ``attribution_geometry`` (B,): how much the image score drops when that modality's input is
        made nominal where the score comes from (`trd.detector.counterfactual`: around the fused
        map's maximum, replaced by matched content of a stored good validation input).

        Positive = that modality's input raised the score there. Where scores come from the object
        only (``score.foreground_only``), the object is the one of the real 3D input in every pass.
        Costs two extra passes of the model.
        """
        if self.reference is None:
            raise TRDError("this model has no good inputs for modality attribution (written by an "
                           "older trd); run `trd calibrate` on good samples to add one")
        out = self(rgb, x3d)
        region = self.scorer.foreground(x3d)
        peaks = out["anomaly_map"].flatten(1).argmax(dim=1)
        inputs = {"rgb": rgb, "x3d": x3d}
        for modality, key in MODALITY_INPUTS.items():
            swapped = inputs | {key: nominal_inputs(inputs[key], self.reference[key].to(inputs[key].device), peaks)}
            score = self.scorer(self.model.raw_maps(swapped["rgb"], swapped["x3d"]), region)["score"]
            out[f"attribution_{modality}"] = out["score"] - score
        return out


def require_good_inputs(detector: Detector, path: str | Path) -> None:
    """CheckpointError naming ``path`` when its detector cannot :meth:`Detector.explain` (older model files)."""
    if detector.reference is None:
        raise CheckpointError(path, "has no good inputs for --explain (written by an older trd); "
                                    "run `trd calibrate` on good samples to add one")


def _teachers(model: TRDModel) -> dict[str, nn.Module | None]:
    """The model's teachers by branch name (None where the variant has none)."""
    return {"rgb": model.teacher_rgb, "geo": model.teacher_geo}


def save_detector(path: str | Path, detector: Detector, cfg: Config, thresholds: Thresholds,
                  extra: dict[str, Any] | None = None) -> None:
    """Write ``model.pt`` atomically. Teacher weights are included unless they are torchvision's
    ImageNet ones, which every user can rebuild (keeps the file half the size)."""
    model = detector.model
    teachers = None
    if cfg.model.weights != "imagenet":
        teachers = {name: t.state_dict() for name, t in _teachers(model).items() if t is not None}
    save_checkpoint(path, "model", {
        "config": cfg.to_dict(),
        "students": model.students.state_dict(),
        "teachers": teachers,
        "scorer": detector.scorer.state_dict(),
        "thresholds": thresholds.to_dict(),
        # float16 halves the size; a counterfactual patch needs no more precision than that
        "reference": None if detector.reference is None else
        {k: v.detach().half().cpu().contiguous() for k, v in detector.reference.items()},
        "extra": extra or {},
    })


def _reference(path: str | Path, raw: Any, size: int) -> dict[str, Tensor] | None:
    """The good inputs of modality attribution in a model file (absent in files of older trd versions: None)."""
    if raw is None:
        return None
    if (not isinstance(raw, dict) or set(raw) != set(MODALITY_INPUTS.values())
            or any(not isinstance(v, Tensor) or v.ndim != 4 or tuple(v.shape[1:]) != (3, size, size) or not len(v)
                   for v in raw.values()) or len({len(v) for v in raw.values()}) != 1):
        raise CheckpointError(path, f"damaged reference entry (expected rgb and x3d tensors of shape K x 3 x {size} x {size})")
    return {k: v.float() for k, v in raw.items()}


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[Detector, Config, Thresholds, dict[str, Any]]:
    """Rebuild the detector from ``model.pt`` in eval mode on ``device``."""
    blob = load_checkpoint(path, "model", map_location="cpu", mmap=True)
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
    reference = _reference(path, blob.get("reference"), cfg.data.image_size)
    detector = Detector(model, scorer, reference).to(device).eval()
    return detector, cfg, thresholds, blob["extra"]


class TorchEngine:
    """A detector as an inference engine: ``engine(rgb, x3d) -> {name: array}`` on numpy arrays.

    The arrays are ImageNet-normalised B x 3 x S x S float32; the outputs those of
    :meth:`Detector.forward` (or :meth:`Detector.explain` with ``explain``), as float32 arrays.

    The detector runs in channels_last memory format (``channels_last``, on by default): on one core
    of the 2-vCPU Intel Xeon VM of benchmarks/README.md (2026-12-06, `benchmarks/torch_format.py`),
    CPU time per pair fell 1.20x for the demo model at batch 1 and 1.16x at batch 8, and 1.01x (no
    gain beyond noise, no loss) for the paper model at batch 1; outputs within 1e-5 of NCHW.
    """

    name = "torch"

    def __init__(self, detector: Detector, device: torch.device, explain: bool = False,
                 channels_last: bool = True) -> None:
        self.format = torch.channels_last if channels_last else torch.contiguous_format
        self.detector = detector.eval().to(memory_format=self.format)
        self.device = device
        self.explain = explain

    def __call__(self, rgb: np.ndarray, x3d: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            r, x = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
                    .contiguous(memory_format=self.format) for a in (rgb, x3d))
            out = self.detector.explain(r, x) if self.explain else self.detector(r, x)
        return {k: v.float().cpu().numpy() for k, v in out.items()}
