"""Detection metrics, the official MVTec 3D-AD AU-PRO, and per category / defect / branch tables."""

from .aupro import DEFAULT_LIMITS, au_pro, pro_curve_exact, pro_curve_thresholds, trapezoid_area
from .tables import IMAGE_KEYS, PIXEL_KEYS, evaluate_arrays, pro_keys
from .metrics import ClassScores, average_precision, binary_metrics, f1_max, image_auroc, pixel_auroc

__all__ = [
    "DEFAULT_LIMITS",
    "IMAGE_KEYS",
    "PIXEL_KEYS",
    "ClassScores",
    "au_pro",
    "average_precision",
    "binary_metrics",
    "evaluate_arrays",
    "f1_max",
    "image_auroc",
    "pixel_auroc",
    "pro_curve_exact",
    "pro_curve_thresholds",
    "pro_keys",
    "trapezoid_area",
]
