"""Normalisation, fusion and smoothing of per-branch anomaly maps (docs/METHOD.md §5.2), in torch.

Everything here runs on the model's device and uses only ops that TorchScript and ONNX export
(arithmetic, conv2d, index_select, gather, argmax), so a deployed model needs no scipy. The Gaussian
blur reproduces ``scipy.ndimage.gaussian_filter(m, sigma, truncate=4.0, mode="reflect")`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ScoreConfig
from ..data.geometry import input_foreground
from ..errors import TRDError

#: Branch names a scorer can hold (model variants: "rgb" + "geo", or one of the three alone).
BRANCHES = ("rgb", "geo", "fused")
#: DEPARTURE (docs/METHOD_NOTES.md §4): floor of a branch's validation std (the reference divides by the std as is). A branch
#: whose validation maps are constant (std 0, e.g. an untrained or degenerate student) would divide
#: by zero; with the floor its z-scores stay finite (huge where the map moves), which is loud in the
#: results rather than NaN everywhere. Real stds (~1e-2) are untouched.
STD_EPS = 1e-8


def _symmetric_index(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices that pad a length-n axis by ``radius`` with scipy's 'reflect' rule (d c b a | a b c d).

    The extension is periodic with period 2n, so radii larger than the axis are handled too.
    """
    idx = torch.remainder(torch.arange(-radius, n + radius, device=device), 2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _symmetric_pad(x: Tensor, radius: int, dim: int) -> Tensor:
    """``x`` padded by ``radius`` along ``dim`` (2 or 3) with scipy's 'reflect' rule.

    Where the axis is at least ``radius`` long (every real image) the pad is two mirrored slices of
    constant size: an exported graph then holds no index arithmetic on the input's shape, which
    OpenVINO cannot compile ("Output names mismatch"). Shorter axes take the periodic indices.
    """
    n = x.shape[dim]
    if n < radius:
        return x.index_select(dim, _symmetric_index(n, radius, x.device))
    head, tail = x.narrow(dim, 0, radius).flip(dim), x.narrow(dim, n - radius, radius).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of B x C x H x W maps, equal to scipy's ``gaussian_filter`` per map.

    Kernel radius ``int(truncate * sigma + 0.5)`` and weights exp(-x^2 / 2 sigma^2) normalised to sum
    1, as scipy. ``sigma <= 0`` (or a radius of 0) is the identity.
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        self.radius = int(self.truncate * self.sigma + 0.5) if self.sigma > 0 else 0
        x = torch.arange(-self.radius, self.radius + 1, dtype=torch.float64)
        w = torch.exp(-0.5 * (x / self.sigma) ** 2) if self.radius > 0 else torch.ones(1, dtype=torch.float64)
        self.register_buffer("weight", w / w.sum(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.radius == 0:
            return x
        b, c, h, w = x.shape
        k = self.weight.to(x.dtype)
        y = F.conv2d(_symmetric_pad(x.reshape(b * c, 1, h, w), self.radius, 2), k.view(1, 1, -1, 1))
        y = F.conv2d(_symmetric_pad(y, self.radius, 3), k.view(1, 1, 1, -1))
        return y.reshape(b, c, h, w)


@dataclass
class BranchStats:
    """Streaming mean and population std of every pixel of a branch's validation maps (§5.2).

    ``update`` merges each batch with Chan et al.'s parallel rule in float64, so the validation set
    never has to be held in memory and the result does not depend on how it is batched.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    def update(self, maps: Tensor | np.ndarray) -> None:
        """Add the pixels of a batch of unsmoothed maps (any shape)."""
        x = torch.as_tensor(maps).detach().reshape(-1).double()
        if x.numel() == 0:
            return
        if not bool(torch.isfinite(x).all()):
            raise TRDError("validation anomaly maps contain NaN or inf; cannot compute normalisation statistics")
        mean = x.mean()
        self._combine(x.numel(), float(mean), float(((x - mean) ** 2).sum()))

    def merge(self, other: BranchStats) -> None:
        """Add another accumulator's pixels (e.g. from another process)."""
        self._combine(other.count, other.mean, other.m2)

    def _combine(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Population std (ddof 0), as numpy's default."""
        if self.count == 0:
            raise TRDError("no validation maps were seen: the validation split is empty or was not run")
        return math.sqrt(max(self.m2, 0.0) / self.count)

    @property
    def scale(self) -> float:
        """The divisor used for z-scores: ``max(std, STD_EPS)``."""
        return max(self.std, STD_EPS)

    def as_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, raw: Mapping[str, float | int]) -> BranchStats:
        return cls(int(raw["count"]), float(raw["mean"]), float(raw["m2"]))


StatsLike = Union[BranchStats, tuple[float, float]]


def _mean_scale(stats: StatsLike) -> tuple[float, float]:
    """(mean, divisor) from a BranchStats or a (mean, std) pair, with the std floored at STD_EPS."""
    if isinstance(stats, BranchStats):
        return stats.mean, stats.scale  # scale raises if the accumulator saw no data
    mean, std = stats
    return float(mean), max(float(std), STD_EPS)


def _fuse_blurred(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From blurred z-maps (B x K x H x W): fused map (B x 1 x H x W), score (B,), branch shares (B x K).

    By linearity, blur(sum of z) == sum of blur(z); the share of a branch is its blurred z-value at
    the fused map's argmax, so the shares add up to the score. They are shares of the two BRANCHES,
    not of the two modalities: each branch sees both inputs through the Filter and the Amplifier.
    """
    fused = z.sum(dim=1, keepdim=True)
    flat = fused.flatten(1)
    arg = flat.argmax(dim=1)
    # [..., 0], not .squeeze(2): the exporter turns a squeeze on a dynamic shape into an ONNX If,
    # which splits the graph for OpenVINO (it then fails: "Output names mismatch").
    shares = z.flatten(2).gather(2, arg.view(-1, 1, 1).expand(-1, z.shape[1], 1))[..., 0]
    return fused, flat.amax(dim=1), shares


class _ZScore(nn.Module):
    """(x - mean) / std with scalar buffers: one per branch, so state-dict keys name the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.full((), float("nan")))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Scorer(nn.Module):
    """Normalisation + fusion + blur of raw branch maps as one exportable module (§5.2).

    The statistics live in buffers ``norm.<branch>.mean`` / ``norm.<branch>.std``, so loading the
    statistics of other branches fails on the key names. Until :meth:`set_stats` is called ``std``
    is NaN: an uncalibrated scorer yields NaN, never silently un-normalised scores. ``forward``
    takes the raw B x 1 x H x W maps by branch name and returns ``anomaly_map`` (B x 1 x H x W),
    ``score`` (B,), ``share_<branch>`` (B,) (each branch's blurred z-value at the fused map's
    maximum, so the branch shares add up to the score) and
    ``scored_<branch>`` (B x 1 x H x W: that branch's z-scored, blurred, restricted map, whose
    maximum is its single-branch image score).
    """

    def __init__(self, branches: Sequence[str], sigma: float = 4.0, truncate: float = 4.0,
                 foreground_margin: int | None = None) -> None:
        super().__init__()
        if foreground_margin is not None and foreground_margin < 0:
            raise ValueError(f"foreground_margin must be >= 0 or None, got {foreground_margin}")
        self.foreground_margin = foreground_margin
        names = list(branches)
        if not names or len(set(names)) != len(names) or any(b not in BRANCHES for b in names):
            raise ValueError(f"branches must be distinct names from {BRANCHES}, got {names}")
        self.branches = names
        self.norm = nn.ModuleDict({b: _ZScore() for b in names})
        self.blur = GaussianBlur(sigma, truncate)

    @classmethod
    def from_config(cls, branches: Sequence[str], cfg: ScoreConfig) -> Scorer:
        """The scorer ``cfg`` (the run's ``score`` section) describes, not yet calibrated."""
        return cls(branches, sigma=cfg.sigma, foreground_margin=cfg.foreground_margin if cfg.foreground_only else None)

    def set_stats(self, stats: Mapping[str, StatsLike]) -> None:
        """Store each branch's mean and floored std (from BranchStats or (mean, std) pairs)."""
        missing = [b for b in self.norm if b not in stats]
        if missing:
            raise ValueError(f"no normalisation statistics for branch(es) {missing}")
        for b, z in self.norm.items():
            mean, scale = _mean_scale(stats[b])
            z.mean.fill_(mean)
            z.std.fill_(scale)

    @property
    def fitted(self) -> bool:
        return all(bool(torch.isfinite(z.std)) for z in self.norm.values())

    def foreground(self, x3d: Tensor) -> Tensor | None:
        """The object mask of a batch of 3D inputs when this scorer restricts to it, else None."""
        return input_foreground(x3d) if self.foreground_margin is not None else None

    def scored_region(self, foreground: Tensor | None) -> Tensor | None:
        """The pixels that may carry a score: ``foreground`` grown by the margin, or None (all pixels).

        DEPARTURE (docs/METHOD_NOTES.md §12; opt-in, ``score.foreground_only``): the reference scores every pixel. Off the
        object nothing can be defective, but a student's errors at the image border can hold the
        image's maximum; restricting maps to the object removes them.
        """
        if self.foreground_margin is None or foreground is None:
            return None
        region = foreground.float()
        if self.foreground_margin > 0:
            k = 2 * self.foreground_margin + 1
            region = F.max_pool2d(region, k, stride=1, padding=self.foreground_margin)
        return region > 0.5

    def _restrict(self, blurred: Tensor, foreground: Tensor | None) -> Tensor:
        """Outside the scored region each map takes its own per-image minimum (it never holds the max)."""
        region = self.scored_region(foreground)
        if region is None:
            return blurred
        return torch.where(region, blurred, blurred.amin(dim=(2, 3), keepdim=True))

    def forward(self, maps: dict[str, Tensor], foreground: Tensor | None = None) -> dict[str, Tensor]:
        parts: list[Tensor] = []
        for b, z in self.norm.items():
            m = maps[b]
            parts.append(z(m if m.dtype == torch.float64 else m.float()))
        scored = self._restrict(self.blur(torch.cat(parts, dim=1)), foreground)
        fused, score, shares = _fuse_blurred(scored)
        out = {"anomaly_map": fused, "score": score}
        for i, b in enumerate(self.branches):
            out["share_" + b] = shares[:, i]
            out["scored_" + b] = scored[:, i : i + 1]
        return out
