"""PairDataset: turns `Sample`s into the tensors the teachers read (docs/METHOD.md §2).

The 3D input is deterministic for a file and a parameter set, so it goes through `PreprocessCache`:
computed once, reused in every epoch and every later run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from .cache import PreprocessCache, default_cache_dir
from .geometry import preprocess_3d
from .io import Camera, check_pair, read_depth_png, read_mask, read_rgb, read_xyz
from .samples import Sample
from .transforms import normalise, resize_mask, resize_rgb, rgb_to_chw01

def build_cache(cfg: DataConfig) -> PreprocessCache | None:
    """The preprocessing cache a config asks for ("none" disables it)."""
    if cfg.cache_dir == "none":
        return None
    return PreprocessCache(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())


@lru_cache(maxsize=16)
def _camera_for(root: Path) -> Camera:
    path = root / "camera.json"
    if not path.is_file():
        raise DataError(path, "missing: depth PNGs need the camera intrinsics (fx, fy, cx, cy, depth_scale)")
    return Camera.from_json(path)


def read_cloud(sample: Sample) -> np.ndarray:
    """The organised point cloud of a sample, whatever file holds it."""
    if sample.xyz_kind == "xyz_tiff":
        return read_xyz(sample.xyz)
    if sample.xyz_kind == "depth_png":
        # <root>/<split>/<defect>/depth/<stem>.png -> camera.json lives in <root>
        return read_depth_png(sample.xyz, _camera_for(sample.xyz.parents[3]))
    raise DataError(sample.xyz, f"not a point cloud (xyz_kind={sample.xyz_kind!r})")


def preprocess_params(cfg: DataConfig, category: str) -> dict[str, Any]:
    """Everything that changes the 3D image; it is part of the cache key."""
    return {
        "modality": cfg.modality_3d,
        "size": cfg.image_size,
        "sobel_k": cfg.sobel_for(category),
        "plane": cfg.plane,
        "plane_threshold": cfg.plane_threshold,
    }


def load_3d(sample: Sample, cfg: DataConfig, rgb_hw: tuple[int, int], cache: PreprocessCache | None) -> np.ndarray:
    """The 3D input image of a sample: float32 3xSxS in [0,1], before ImageNet normalisation."""
    if sample.xyz_kind == "normals_png":
        # Eyecandies: the dataset's own normal map goes through the RGB transform (docs/METHOD.md §2.8).
        normals = read_rgb(sample.xyz)
        check_pair(sample.rgb, rgb_hw, sample.xyz, normals.shape[:2])
        return rgb_to_chw01(resize_rgb(normals, cfg.image_size))
    params = preprocess_params(cfg, sample.category)

    def compute() -> np.ndarray:
        xyz = read_cloud(sample)
        check_pair(sample.rgb, rgb_hw, sample.xyz, xyz.shape[:2])
        try:
            return preprocess_3d(
                xyz,
                modality=params["modality"],
                size=params["size"],
                sobel_k=params["sobel_k"],
                plane=params["plane"],
                plane_threshold=params["plane_threshold"],
            )
        except ValueError as exc:
            raise DataError(sample.xyz, str(exc)) from None

    if cache is None:
        return compute()
    # The RGB size is part of the key so that the pair check reruns whenever the RGB changes size.
    return cache.get(sample.xyz, {**params, "rgb_hw": list(rgb_hw)}, compute)


class PairDataset(Dataset):
    """RGB + 3D pairs with masks, as float tensors ready for the teachers."""

    def __init__(self, samples: list[Sample], cfg: DataConfig, cache: PreprocessCache | None = None) -> None:
        if not samples:
            raise DataError(Path(cfg.root or "."), "no samples to load (empty split)")
        self.samples = samples
        self.cfg = cfg
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(RGB uint8 SxSx3, 3D image float32 3xSxS in [0,1], mask bool SxS) for display and tensors."""
        sample = self.samples[index]
        size = self.cfg.image_size
        rgb_full = read_rgb(sample.rgb)
        hw = rgb_full.shape[:2]
        x3d = load_3d(sample, self.cfg, hw, self.cache)
        if sample.mask is not None:
            mask = resize_mask(read_mask(sample.mask, shape=hw), size)
        elif sample.label:
            raise DataError(sample.rgb, f"defect sample ({sample.defect}) has no ground-truth mask")
        else:
            mask = np.zeros((size, size), dtype=bool)
        return resize_rgb(rgb_full, size), x3d, mask

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rgb, x3d, mask = self.load_raw(index)
        return {
            "rgb": torch.from_numpy(normalise(rgb_to_chw01(rgb))),
            "x3d": torch.from_numpy(normalise(x3d)),
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "label": torch.tensor(self.samples[index].label, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }


class SkipBad(Dataset):
    """Wraps a dataset so that a sample whose files are bad yields its error, not an exception.

    The error travels as data, ``(path, problem)``: a DataError raised inside a DataLoader worker
    process cannot be rebuilt by the loader (it re-raises a RuntimeError carrying the worker's whole
    traceback), so its consumer (training, `iterate_outputs`) raises or reports it in the main process.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except DataError as exc:
            return {"error": (str(exc.path), exc.problem), "index": torch.tensor(index)}


def collate_skipping_bad(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate the good items; ``errors``: (dataset index, (path, problem)) of the bad ones."""
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = torch.utils.data.default_collate(good) if good else {}
    batch["errors"] = [(int(it["index"]), it["error"]) for it in items if "error" in it]
    return batch
