"""Batched inference over a dataset, with bad samples reported and skipped instead of fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import SkipBad, collate_skipping_bad
from ..errors import DataError

Runner = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def iterate_outputs(run: Runner, dataset: Dataset, device: torch.device, batch_size: int,
                    num_workers: int = 0, skip_bad: bool = False) -> Iterator[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """Yield (batch, outputs) for every batch.

    With ``skip_bad`` a batch may carry ``errors``: (dataset index, "path: problem") of the samples
    that could not be loaded, which are left out of it. Without it the first bad sample raises its
    DataError, whatever ``num_workers``. Memory stays bounded by one batch: nothing is accumulated here.
    """
    loader = DataLoader(SkipBad(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_skipping_bad, pin_memory=device.type == "cuda")
    with torch.inference_mode():
        for batch in loader:
            errors = batch.pop("errors")
            if errors and not skip_bad:
                raise DataError(*errors[0][1])
            if skip_bad:
                batch["errors"] = [(index, f"{path}: {problem}") for index, (path, problem) in errors]
            if "rgb" not in batch:
                yield batch, {}
                continue
            out = run(batch["rgb"].to(device, non_blocking=True), batch["x3d"].to(device, non_blocking=True))
            yield batch, out
