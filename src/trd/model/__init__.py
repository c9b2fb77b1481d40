"""Model: frozen ResNet teachers, TRD students and the two-branch TRDModel (docs/METHOD.md §3)."""

from .backbone import BACKBONES, FeatureInfo, Teacher, build_teacher, feature_info
from .student import Amplifier, Bottleneck, CrossmodalFilter, Decoder, FusedBottleneck, Student, StudentOutput
from .trd import VARIANTS, TRDModel, Variant, build_model, cosine_distance_map, student_parameter_counts

__all__ = [
    "BACKBONES",
    "VARIANTS",
    "Amplifier",
    "Bottleneck",
    "CrossmodalFilter",
    "Decoder",
    "FeatureInfo",
    "FusedBottleneck",
    "Student",
    "StudentOutput",
    "TRDModel",
    "Teacher",
    "Variant",
    "build_model",
    "build_teacher",
    "cosine_distance_map",
    "feature_info",
    "student_parameter_counts",
]
