"""PairDataset: turns `Sample`s into the tensors the teachers read (docs/METHOD.md §2).

The loading and checking itself is torch-free (`trd.data.inputs`); this module wraps it for torch.
The 3D input is deterministic for a file and a parameter set, so it goes through `PreprocessCache`:
computed once, reused in every epoch and every later run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from .cache import PreprocessCache
from .inputs import AspectOnce, InputStats, load_pair
from .samples import Sample
from .transforms import normalise, rgb_to_chw01



class PairDataset(Dataset):
    """RGB + 3D pairs with masks, as float tensors ready for the teachers.

    ``reference``: the training inputs' statistics (from the model); each cloud's scale is checked
    against them and an aspect ratio other than the training images' is warned about once
    (`trd.data.inputs`).
    """

    def __init__(self, samples: list[Sample], cfg: DataConfig, cache: PreprocessCache | None = None,
                 reference: InputStats | None = None) -> None:
        if not samples:
            raise DataError(Path(cfg.root or "."), "no samples to load (empty split)")
        self.samples = samples
        self.cfg = cfg
        self.cache = cache
        self.reference = reference
        self._aspect = AspectOnce(reference)

    def __len__(self) -> int:
        return len(self.samples)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(RGB uint8 SxSx3, 3D image float32 3xSxS in [0,1], mask bool SxS) for display and tensors."""
        pair = load_pair(self.samples[index], self.cfg, self.cache, self.reference)
        self._aspect.check(pair.hw, self.samples[index].rgb)
        return pair.rgb, pair.x3d, pair.mask

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
