"""trd: multimodal (RGB + 3D) industrial anomaly detection with Tuned Reverse Distillation."""

__version__ = "0.1.0"
