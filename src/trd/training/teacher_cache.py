"""Frozen-teacher features, computed once per training sample and reused in every later epoch.

The inputs are not augmented (docs/METHOD.md §4.2) and the teachers never change, so their features are
a pure function of the sample: recomputing them each epoch is wasted work. They are kept in
preallocated device tensors indexed by dataset position, within ``train.teacher_cache_gb``.

Under ``torchrun`` each rank caches the samples of its own shards, in its own copy (the limit is
per rank; N CPU processes on one machine hold N copies in host memory). The sampler deals samples
to ranks anew every epoch, so a rank's cache fills over the first few epochs; until then a batch
with any uncached sample recomputes its teacher features from the loaded images (the same values,
up to rounding: the teachers are frozen and in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..config import Config
from ..model.backbone import feature_info
from ..model.trd import TRDModel
from .device import autocast


def teacher_cache_bytes(cfg: Config, n_samples: int, dtype: torch.dtype) -> int:
    """Bytes needed to hold both teachers' three feature maps for ``n_samples`` inputs."""
    info = feature_info(cfg.model.backbone)
    size = cfg.data.image_size
    per_sample = sum(c * (size // r) ** 2 for c, r in zip(info.channels, info.reductions))
    return 2 * n_samples * per_sample * torch.tensor([], dtype=dtype).element_size()


class TeacherCache:
    """Teacher features by sample index; falls back to computing them when disabled or too big."""

    def __init__(self, model: TRDModel, n_samples: int, cfg: Config, device: torch.device,
                 log: Callable[[str], None] | None = None) -> None:
        self.model, self.n, self.device = model, n_samples, device
        self.store: dict[str, list[torch.Tensor]] | None = None
        self.filled = torch.zeros(n_samples, dtype=torch.bool)
        self.enabled = cfg.train.cache_teacher
        if self.enabled:
            need = teacher_cache_bytes(cfg, n_samples, torch.float32) / 2**30
            if need > cfg.train.teacher_cache_gb:
                self.enabled = False
                if log:
                    log(f"teacher feature cache off: needs {need:.1f} GiB > train.teacher_cache_gb={cfg.train.teacher_cache_gb}")

    @property
    def complete(self) -> bool:
        return self.enabled and bool(self.filled.all())

    def features(self, batch: dict[str, Any], dtype: torch.dtype) -> dict[str, list[torch.Tensor]]:
        """Teacher features of a batch: from the cache when every index is there, else computed."""
        index = batch["index"]
        if self.enabled and bool(self.filled[index].all()):
            dev_index = index.to(self.device)
            return {k: [level[dev_index] for level in levels] for k, levels in self.store.items()}
        rgb = batch["rgb"].to(self.device, non_blocking=True)
        x3d = batch["x3d"].to(self.device, non_blocking=True)
        with torch.no_grad(), autocast(self.device, dtype):
            feats = self.model.teacher_features(rgb, x3d)
        if self.enabled:
            if self.store is None:
                self.store = {k: [torch.empty((self.n, *f.shape[1:]), dtype=f.dtype, device=self.device)
                                  for f in levels] for k, levels in feats.items()}
            dev_index = index.to(self.device)
            for k, levels in feats.items():
                for slot, f in zip(self.store[k], levels):
                    slot[dev_index] = f
            self.filled[index] = True
        return feats
