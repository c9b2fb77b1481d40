"""TRDModel: two frozen teachers and one student per branch (docs/METHOD.md §1, §3.7, §5.1), plus ablations.

Branches are named after their main modality: "rgb" (colour) and "geo" (geometry: the 3D image),
or "fused" for the one-student fused-teacher baseline. Training is driven from outside, one
student at a time (docs/METHOD.md §4.2): run :meth:`TRDModel.teacher_features` once, then for each
name in ``model.students`` call the student on :meth:`TRDModel.student_inputs`, compute the loss
against ``branch_targets(feats)[name]`` and step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from .backbone import Teacher, build_teacher, feature_info
from .student import Student, StudentOutput

Features = dict[str, list[Tensor]]


@dataclass(frozen=True)
class Variant:
    """A model layout: which students exist and which crossmodal modules they have."""

    students: tuple[str, ...]  # "rgb" / "geo" (main = that modality) or "fused" (concatenated teachers)
    use_filter: bool
    use_amplifier: bool
    summary: str

    @property
    def modalities(self) -> tuple[str, ...]:
        """Teachers the variant needs."""
        crossmodal = self.use_filter or self.use_amplifier or "fused" in self.students
        return ("rgb", "geo") if crossmodal else self.students


#: DEPARTURE (docs/METHOD_NOTES.md §9): the ablations are our reading of the paper's (its ablation
#: tables were not available); "trd" is the reference model.
VARIANTS: dict[str, Variant] = {
    "trd": Variant(("rgb", "geo"), True, True, "full TRD: two students, each with Filter and Amplifier"),
    "trd_no_filter": Variant(("rgb", "geo"), False, True, "TRD without the Crossmodal Filter"),
    "trd_no_amplifier": Variant(("rgb", "geo"), True, False, "TRD without the Crossmodal Amplifier"),
    "rd_rgb": Variant(("rgb",), False, False, "RGB-only reverse distillation"),
    "rd_3d": Variant(("geo",), False, False, "3D-only (geometry) reverse distillation"),
    "rd_fused_teacher": Variant(
        ("fused",), False, False, "one student distilling the channel concatenation of both teachers"
    ),
}

_ASSIST = {"rgb": "geo", "geo": "rgb"}


class TRDModel(nn.Module):
    """Frozen teachers (``teacher_rgb``, ``teacher_geo``; None when a variant does not use one) and
    trainable ``students`` keyed by branch name."""

    def __init__(
        self,
        teacher_rgb: Teacher | None,
        teacher_geo: Teacher | None,
        students: dict[str, Student],
        variant: str,
        image_size: int,
    ) -> None:
        super().__init__()
        self.teacher_rgb = teacher_rgb
        self.teacher_geo = teacher_geo
        self.students = nn.ModuleDict(students)
        self.variant = variant
        self.image_size = image_size

    def teacher_features(self, rgb: Tensor, x3d: Tensor) -> Features:
        """Frozen features of the modalities in use, keyed "rgb" / "geo" (no autograd graph)."""
        feats: Features = {}
        with torch.no_grad():
            if self.teacher_rgb is not None:
                feats["rgb"] = self.teacher_rgb(rgb)
            if self.teacher_geo is not None:
                feats["geo"] = self.teacher_geo(x3d)
        return feats

    def branch_targets(self, feats: Features) -> Features:
        """Features each student must reproduce: its main teacher's, or both concatenated for "fused"."""
        return {name: _target(name, feats) for name in self.students}

    def student_inputs(self, name: str, feats: Features) -> tuple[list[Tensor], list[Tensor] | None]:
        """(main, assist) teacher features for student ``name`` (useful to call a DDP-wrapped student)."""
        assist = feats[_ASSIST[name]] if self.students[name].needs_assist else None
        return _target(name, feats), assist

    def raw_maps(self, rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        """Unnormalised per-branch anomaly maps (B x 1 x H x W, the input's size); the scorer's input.

        §5.1: per branch, the sum over levels of 1 - channel cosine(student output, target).
        """
        feats = self.teacher_features(rgb, x3d)
        targets = self.branch_targets(feats)
        size = tuple(rgb.shape[-2:])
        maps = {}
        for name, student in self.students.items():
            out = student(*self.student_inputs(name, feats))
            maps[name] = cosine_distance_map(out.map_source, targets[name], size)
        return maps

    def forward(self, rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        """Eval mode only: raw per-branch maps keyed by branch name (normalisation/fusion: trd.scoring)."""
        if self.training:
            raise RuntimeError(
                "TRDModel.forward is for eval mode; to train, call teacher_features() once per batch, "
                "then each student on student_inputs(name, feats) and backward/step in turn"
            )
        return self.raw_maps(rgb, x3d)


def cosine_distance_map(student: list[Tensor], teacher: list[Tensor], size: int | tuple[int, int]) -> Tensor:
    """B x 1 x size: sum over levels of 1 - cosine(student, teacher) along channels (§5.1).

    Each level is upsampled bilinearly with ``align_corners=True`` like the reference. Computed in
    float32 whatever the feature dtype: 1 - cos of near-identical bf16 features would be mostly
    rounding error.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need matching non-empty feature lists, got {len(student)} and {len(teacher)}")
    out_size = (size, size) if isinstance(size, int) else size
    levels = [
        F.interpolate(1.0 - F.cosine_similarity(s.float(), t.float(), dim=1).unsqueeze(1), size=out_size,
                      mode="bilinear", align_corners=True)
        for s, t in zip(student, teacher)
    ]
    return sum(levels[1:], levels[0])


def _target(name: str, feats: Features) -> list[Tensor]:
    if name == "fused":
        return [torch.cat(pair, dim=1) for pair in zip(feats["rgb"], feats["geo"])]
    return feats[name]


def check_model_config(cfg: ModelConfig, image_size: int) -> None:
    """ConfigError for a model this module cannot build (checked before any file is written)."""
    if cfg.variant not in VARIANTS:
        raise ConfigError(f"unknown model.variant {cfg.variant!r}; known: {', '.join(VARIANTS)}")
    if image_size <= 0 or image_size % 32:
        raise ConfigError(f"image size {image_size} must be a positive multiple of 32 (bottleneck at 1/32)")
    if len(cfg.decoder_blocks) != 3 or min(cfg.decoder_blocks) < 1:
        raise ConfigError(f"model.decoder_blocks must be 3 positive integers, got {cfg.decoder_blocks}")
    if cfg.bottleneck_blocks < 1:
        raise ConfigError(f"model.bottleneck_blocks must be >= 1, got {cfg.bottleneck_blocks}")
    feature_info(cfg.backbone)


def build_model(cfg: ModelConfig, image_size: int) -> TRDModel:
    """Teachers (two separate frozen copies) and students of ``cfg.variant`` for ``image_size`` inputs."""
    check_model_config(cfg, image_size)
    variant = VARIANTS[cfg.variant]
    channels = feature_info(cfg.backbone).channels
    first = build_teacher(cfg.backbone, cfg.weights)
    teachers = {m: first if i == 0 else copy.deepcopy(first) for i, m in enumerate(variant.modalities)}
    students = {}
    for name in variant.students:
        student_channels = tuple(2 * c for c in channels) if name == "fused" else channels
        students[name] = Student(
            student_channels,
            use_filter=variant.use_filter,
            use_amplifier=variant.use_amplifier,
            fuse_stopgrad=cfg.fuse_stopgrad,
            decoder_blocks=tuple(cfg.decoder_blocks),
            bottleneck_blocks=cfg.bottleneck_blocks,
        )
    return TRDModel(teachers.get("rgb"), teachers.get("geo"), students, cfg.variant, image_size)


def student_parameter_counts(model: TRDModel) -> dict[str, dict[str, int]]:
    """Per student: trainable parameters of each module and in total (see :meth:`Student.parameter_counts`)."""
    return {name: student.parameter_counts() for name, student in model.students.items()}
