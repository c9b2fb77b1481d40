"""Image transforms shared by training, evaluation and deployment (numpy only, no torch).

Both inputs go through the same ImageNet normalisation (docs/METHOD.md §2.2): the RGB image and
the 3D image (depth or surface normals, already in [0, 1]). Masks are resized bilinearly and
binarised at 0.5 (§2.7).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
#: The normalised value of a 3D-input pixel with no surface (all channels 0 before `normalise`).
NORMALISED_BACKGROUND = -IMAGENET_MEAN / IMAGENET_STD


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """PIL bilinear resize with antialiasing, aspect ratio not kept (torchvision Resize on PIL)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def normalise(chw01: np.ndarray) -> np.ndarray:
    """[0,1] CHW float image -> ImageNet-normalised float32 CHW array (RGB and 3D alike)."""
    out = (chw01.astype(np.float32) - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return np.ascontiguousarray(out)


def rgb_to_chw01(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1]."""
    return rgb.transpose(2, 0, 1).astype(np.float32) / 255.0


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a {0,1} mask, then binarise at 0.5 (docs/METHOD.md §2.7)."""
    if mask.shape == (size, size):
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.float32))
    return np.asarray(img.resize((size, size), Image.BILINEAR)) > 0.5
