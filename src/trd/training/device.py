"""Where and how the model runs: seeding, device, precision, distributed process group."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices); deterministic cuDNN as the reference (§4.2)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this process's CUDA device if any (LOCAL_RANK under torchrun), else CPU.

    DEPARTURE (docs/METHOD_NOTES.md §7, a reference bug not copied): the reference hard-codes its
    GPU index (``cuda:0`` or ``cuda:1`` per script); here the device is a setting.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device={name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype of ``train.precision``: "fp32" (the default, as the reference), "bf16", or
    "auto" = bf16 where it is fast (CUDA with native bf16), fp32 elsewhere.

    DEPARTURE (docs/METHOD_NOTES.md §10), opt-in only: bf16 autocast runs the students' and
    teachers' forward in bfloat16 (the teacher cache then stores bf16 features); the reference is
    float32 throughout. Losses and maps stay float32. CPUs without AMX/AVX512-BF16 run bf16 slower
    than fp32, so ``auto`` never picks it on CPU.

    Example:
        >>> resolve_precision("auto", torch.device("cpu"))
        torch.float32
    """
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise ConfigError(f"train.precision={name!r}; use auto, fp32 or bf16")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass when ``dtype`` is not fp32; a no-op otherwise."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[DistInfo]:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, NCCL on CUDA).

    On a normal exit every rank waits for the others (rank 0 may still be calibrating and writing)
    before the group is destroyed. On an error the rank leaves at once, without a barrier the other
    ranks might never reach: it destroys its group and re-raises, and torchrun stops the rest.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield DistInfo(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else DistInfo()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    try:
        yield DistInfo(dist.get_rank(), dist.get_world_size())
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.barrier()
    dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if info.world > 1:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """The mean of each value over all ranks (every rank gets the result); unchanged in one process.

    ``device`` is the process's training device: NCCL reduces only CUDA tensors.
    """
    if info.world == 1:
        return dict(values)
    packed = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {k: float(v) / info.world for k, v in zip(values, packed)}


def rank0_value(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (for decisions every rank must take alike); unchanged in one process."""
    if info.world == 1:
        return value
    packed = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(packed, src=0)
    return float(packed)


# Device types whose inputs torch.nn.SyncBatchNorm accepts (it raises a ValueError for CPU tensors).
TORCH_SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks. Every rank holds the same sum, so the gradient of the summed loss of all
    ranks with respect to one rank's input is again the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class AllReduceBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d with the statistics of the global batch of all ranks, for CPU training.

    DEPARTURE (docs/METHOD_NOTES.md §11): the reference trains in one process; here a multi-process
    run synchronises every BatchNorm (this class on CPU, torch's SyncBatchNorm on CUDA).

    Used where torch's SyncBatchNorm refuses the device. Mean and (two-pass) variance come from
    all-reduced sums, and autograd through the all-reduce gives the exact gradient of the
    global-batch normalisation, so batch B split over ranks trains like B in one process (up to
    float summation order). Outside distributed training it is a plain BatchNorm2d; the state dict
    is the same, so checkpoints do not depend on the number of processes.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        local = torch.cat([xf.sum(dim=(0, 2, 3)), xf.new_tensor([xf.numel() // xf.shape[1]])])
        total = _AllReduceSum.apply(local)
        n = total.detach()[-1]  # a tensor, not a float: no graph break under torch.compile
        mean = total[:-1] / n
        centred = xf - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply(centred.square().sum(dim=(0, 2, 3))) / n
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every BatchNorm2d synchronised over the ranks: torch's SyncBatchNorm where
    it supports ``device``, AllReduceBatchNorm elsewhere (CPU). Parameters and buffers are shared."""
    if device.type in TORCH_SYNC_BN_DEVICES:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        bn = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            bn.weight, bn.bias = module.weight, module.bias
        if module.track_running_stats:
            bn.running_mean, bn.running_var = module.running_mean, module.running_var
            bn.num_batches_tracked = module.num_batches_tracked
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, device))
    return module
