"""Batches of model inputs read from files, for inference without torch.

`iterate_batches` reads samples with the trainer's own code (`trd.data.inputs.load_scan`), turns
them into ImageNet-normalised float32 arrays and yields them a batch at a time, keeping each
sample's RGB image and point cloud at their original resolution (where its defect regions are
measured, `trd.scoring.regions`); a sample whose files are bad is reported in its batch's
``errors`` and left out, the others go on. The next batch is read
on a background thread while the current one is scored (inference engines release the GIL), and at
most two batches exist at once, so memory does not grow with the number of samples. `InOrder` is the
other end: results written in order on a thread of their own, while the next ones are scored.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..config import DataConfig
from ..data.cache import PreprocessCache
from ..data.inputs import AspectOnce, InputStats, ScanHealth, load_scan, scan_health
from ..data.samples import Sample
from ..data.transforms import normalise, resize_rgb, rgb_to_chw01
from ..errors import DataError


@dataclass
class Batch:
    """``indices`` into the sample list; ``rgb`` / ``x3d``: B x 3 x S x S normalised float32;
    ``display``: the resized RGB images (uint8 S x S x 3); ``display_3d``: the 3D inputs as the
    model sees them, as images (uint8 S x S x 3); ``masks``: B x S x S bool; ``read_ms``: time spent
    reading and preprocessing each kept sample; ``errors``: (index, "file: problem") of the samples
    left out; ``images``: the RGB images as read (uint8 H x W x 3); ``clouds``: their point clouds
    (float32 H x W x 3, metres; None for normal-map inputs); ``health``: each kept sample's
    `ScanHealth` (what the drift monitor compares with the training scans)."""

    indices: list[int]
    rgb: np.ndarray
    x3d: np.ndarray
    display: list[np.ndarray]
    masks: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)
    display_3d: list[np.ndarray] = field(default_factory=list)
    read_ms: list[float] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    clouds: list[np.ndarray | None] = field(default_factory=list)
    health: list[ScanHealth] = field(default_factory=list)


def load_batch(samples: list[Sample], indices: range, cfg: DataConfig, cache: PreprocessCache | None = None,
               reference: InputStats | None = None, aspect: AspectOnce | None = None) -> Batch:
    """Read ``samples[i]`` for ``i`` in ``indices`` into one batch; bad samples go to ``errors``."""
    aspect = aspect or AspectOnce(reference)
    kept, rgbs, x3ds, displays, shown_3d, masks, errors, read_ms = [], [], [], [], [], [], [], []
    images, clouds, health = [], [], []
    for i in indices:
        start = time.perf_counter()
        try:
            scan = load_scan(samples[i], cfg, cache, reference, with_cloud=True)
        except DataError as exc:
            errors.append((i, str(exc)))
            continue
        rgb, x3d, mask = resize_rgb(scan.rgb, cfg.image_size), scan.x3d, scan.mask
        aspect.check(scan.rgb.shape[:2], samples[i].rgb)
        kept.append(i)
        images.append(scan.rgb)
        clouds.append(scan.cloud)
        health.append(scan_health(rgb, scan))
        rgbs.append(normalise(rgb_to_chw01(rgb)))
        x3ds.append(normalise(x3d))
        displays.append(rgb)
        shown_3d.append(np.rint(np.clip(x3d.transpose(1, 2, 0), 0.0, 1.0) * 255.0).astype(np.uint8))
        masks.append(mask)
        read_ms.append((time.perf_counter() - start) * 1e3)
    size = cfg.image_size
    empty = np.zeros((0, 3, size, size), np.float32)
    return Batch(kept, np.stack(rgbs) if rgbs else empty, np.stack(x3ds) if x3ds else empty, displays,
                 np.stack(masks) if masks else np.zeros((0, size, size), bool), errors, shown_3d, read_ms, images,
                 clouds, health)


def iterate_batches(samples: list[Sample], cfg: DataConfig, batch_size: int, *, cache: PreprocessCache | None = None,
                    reference: InputStats | None = None) -> Iterator[Batch]:
    """Batches of ``samples`` in order (the last may be smaller; a batch may be empty but for errors)."""
    aspect = AspectOnce(reference)
    spans = [range(start, min(start + batch_size, len(samples))) for start in range(0, len(samples), batch_size)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trd-load") as pool:
        pending = pool.submit(load_batch, samples, spans[0], cfg, cache, reference, aspect) if spans else None
        for k in range(len(spans)):
            batch = pending.result()
            pending = pool.submit(load_batch, samples, spans[k + 1], cfg, cache, reference, aspect) \
                if k + 1 < len(spans) else None
            yield batch


#: Results `InOrder` holds at most before the caller waits for the oldest to be written.
WRITE_AHEAD = 16


class InOrder:
    """Calls run one after another, in the order given, on one background thread: writing results
    (each file synced to disk, then a database commit, then a ledger line: mostly waiting for the
    disk) overlaps with reading and scoring the next samples. At most `WRITE_AHEAD` calls wait; a
    call that failed raises in the caller, at its next `submit` or when the block ends, and the calls
    still waiting then are dropped (their samples were not recorded, so a rerun scores them)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: deque[Future] = deque()
        self._failed = False

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= WRITE_AHEAD):
            self._oldest()
        self._pending.append(self._pool.submit(self._run, fn, args))

    def _run(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        if self._failed:  # an earlier call failed: this one is dropped
            return
        try:
            fn(*args)
        except BaseException:
            self._failed = True
            raise

    def _oldest(self) -> None:
        """Wait for the oldest call; if it failed, raise (the ones behind it do nothing, `_run`)."""
        try:
            self._pending.popleft().result()
        except BaseException:
            self._pending.clear()
            raise

    def __enter__(self) -> InOrder:
        return self

    def __exit__(self, *exc: object) -> None:
        try:  # what was submitted is still written (scored work is not thrown away), failures raise
            while self._pending:
                self._oldest()
        finally:
            self._pool.shutdown(wait=True)
