"""Batched inference over a dataset, with bad samples reported and skipped instead of fatal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

Runner = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class SkipBad(Dataset):
    """Wraps a dataset so that a sample whose files are bad yields its error, not an exception.

    The error travels as data, ``(path, problem)``: a DataError raised inside a DataLoader worker
    process cannot be rebuilt by the loader (it re-raises a RuntimeError carrying the worker's whole
    traceback), so `iterate_outputs` recreates it in the main process instead.
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


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "error" not in it]
    batch: dict[str, Any] = torch.utils.data.default_collate(good) if good else {}
    batch["errors"] = [(int(it["index"]), it["error"]) for it in items if "error" in it]
    return batch


def iterate_outputs(run: Runner, dataset: Dataset, device: torch.device, batch_size: int,
                    num_workers: int = 0, skip_bad: bool = False) -> Iterator[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """Yield (batch, outputs) for every batch.

    With ``skip_bad`` a batch may carry ``errors``: (dataset index, "path: problem") of the samples
    that could not be loaded, which are left out of it. Without it the first bad sample raises its
    DataError, whatever ``num_workers``. Memory stays bounded by one batch: nothing is accumulated here.
    """
    loader = DataLoader(SkipBad(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
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
