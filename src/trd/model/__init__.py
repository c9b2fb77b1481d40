"""Model: frozen ResNet teachers, TRD students and the two-branch TRDModel (method.md §3)."""

from .backbone import BACKBONES, FeatureInfo, Teacher, build_teacher, feature_info
from .student import Amplifier, CrossmodalFilter, Decoder, FusedBottleneck, Student, StudentOutput
from .trd import VARIANTS, TRDModel, Variant, build_model, student_parameter_counts

__all__ = [
    "BACKBONES",
    "VARIANTS",
    "Amplifier",
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
    "feature_info",
    "student_parameter_counts",
]
