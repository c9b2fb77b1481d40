"""``trd predict --watch DIR``: score scan pairs as a scanner writes them, until stopped.

``DIR`` is laid out like ``--input``: ``rgb/`` and the model's 3D folder (``xyz/``, ``depth/`` or
``normals/``), files paired by name; the folders may appear after the watch starts. Every ``poll``
seconds the folders are listed, and a pair is scored once it is complete:

- **complete**: both files exist, are not empty, and neither has changed size or modification time
  for ``settle`` seconds. A scanner that writes each file under a name trd ignores (a leading ``.``,
  or a suffix it does not read, e.g. ``scan.png.part``) and renames it when done can use
  ``settle=0``: a pair is then scored as soon as both names are there.
- **once**: whether a scan is done is the output folder's ledger's question (its content key,
  `trd.workflows.predict.Ledger`), so a restart after a kill repeats nothing and skips nothing; a
  pair rewritten with other content under the same name is a new scan and is scored again (a
  scanner that reuses names, e.g. ``latest.png``, makes a new scan each time), the same content
  under another name is not.
- a pair that cannot be read (a truncated file) is reported once and tried again when its files
  change.

SIGINT and SIGTERM end the watch after the pair in hand: its record is written whole (store, then
ledger), the process exits 0.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.inputs import camera_stored
from ..data.readers import folders
from ..data.samples import RGB_SUFFIXES, Sample, unlabelled_samples
from ..errors import ConfigError, DataError
from .engine import LoadedModel
from .predict import Ledger, predict_samples

if TYPE_CHECKING:
    from ..store import Store

Log = Callable[[str], None]


@dataclass
class _Seen:
    """One file's size and modification time, and since when they have not changed."""

    size: int
    mtime_ns: int
    since: float


def _listing(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``folder`` that trd reads, by stem (hidden and temporary names left out)."""
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in suffixes
            and p.is_file()}


class PairWatch:
    """Which pairs of a watched folder are complete (the rule of this module)."""

    def __init__(self, root: Path, fmt: str, settle: float) -> None:
        self.root, self.settle = root, settle
        self.sources = folders(fmt)
        self.seen: dict[Path, _Seen] = {}

    def _settled(self, path: Path, now: float) -> tuple[int, int] | None:
        """(size, mtime) of ``path`` once it has not changed for ``settle`` seconds, else None."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.seen.pop(path, None)
            return None
        seen = self.seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            self.seen[path] = seen = _Seen(stat.st_size, stat.st_mtime_ns, now)
        if stat.st_size == 0 or now - seen.since < self.settle:
            return None
        return seen.size, seen.mtime_ns

    def complete(self, now: float) -> list[tuple[Path, Path, tuple[int, ...]]]:
        """(RGB file, 3D file, signature) of every complete pair, by name."""
        present = [name for name in self.sources if (self.root / name).is_dir()]
        if len(present) > 1:
            raise DataError(self.root, f"holds {' and '.join(f'{n}/' for n in present)}: a watched folder has one 3D "
                                       "folder for the model")
        if not present:
            return []
        rgbs = _listing(self.root / "rgb", RGB_SUFFIXES)
        clouds = _listing(self.root / present[0], tuple(self.sources[present[0]]))
        pairs = []
        for stem in sorted(set(rgbs) & set(clouds)):
            a, b = self._settled(rgbs[stem], now), self._settled(clouds[stem], now)
            if a is not None and b is not None:
                pairs.append((rgbs[stem], clouds[stem], (*a, *b)))
        return pairs


def watch(model: LoadedModel, root: Path, out_dir: Path, store: Store | None, *, settle: float = 2.0,
          poll: float = 0.5, batch_size: int = 8, camera: Path | None = None, stop: threading.Event | None = None,
          log: Log = print) -> dict[str, Any]:
    """Score the complete pairs appearing in ``root`` into ``out_dir`` (locked and claimed by the
    caller) and ``store`` until ``stop`` is set (SIGINT/SIGTERM set it when called from the main
    thread); the counts of this watch, as `predict_samples` gives them."""
    if settle < 0 or poll <= 0:
        raise ConfigError(f"--settle {settle} / --poll {poll}: the settle time must be >= 0 s and the poll interval > 0 s")
    stop = stop or threading.Event()
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, lambda number, _: (stop.set(), log(
                f"predict: {signal.Signals(number).name} received; stopping after the pair in hand")))
    pairs = PairWatch(root, model.config.data.format, settle)
    ledger = Ledger(out_dir, log)
    handed: dict[Path, tuple[int, ...]] = {}  # RGB file -> the signature of the pair when it was handed on
    totals: dict[str, Any] = {"scored": 0, "skipped": 0, "anomalous": 0, "failed": []}
    log(f"predict: watching {root} (a pair counts once both files are unchanged for {settle:g} s); "
        "stop with Ctrl+C or SIGTERM")
    try:
        while not stop.is_set():
            ready = [(rgb, x3d, sig) for rgb, x3d, sig in pairs.complete(time.monotonic()) if handed.get(rgb) != sig]
            samples: list[Sample] = []
            for rgb, x3d, sig in ready:
                handed[rgb] = sig
                try:
                    samples += unlabelled_samples(model.config.data, rgb=rgb, xyz=x3d,
                                                  camera=camera or root / "camera.json",
                                                  camera_optional=camera_stored(model.reference))[0]
                except DataError as exc:
                    totals["failed"].append({"file": str(rgb), "error": str(exc)})
                    log(f"predict: {exc}")
            for start in range(0, len(samples), batch_size):
                if stop.is_set():
                    for sample in samples[start:]:  # not scored: handed on again by the next watch
                        handed.pop(sample.rgb, None)
                    break
                done = predict_samples(model, samples[start:start + batch_size], out_dir, batch_size, log=log,
                                       base=root, store=store, ledger=ledger)
                for key in ("scored", "skipped", "anomalous"):
                    totals[key] += done[key]
                for failure in done["failed"]:
                    log(f"predict: {failure['error']}")
                totals["failed"] += done["failed"]
            stop.wait(poll)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return totals | {"total": len(ledger.done), "predictions": str(ledger.path), "engine": model.name,
                     "store": None if store is None else store.where, "watched": str(root)}
