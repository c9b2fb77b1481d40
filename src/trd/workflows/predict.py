"""``trd predict``: score new RGB + 3D pairs, streaming and resumable, one writer per output folder.

The output folder holds::

    predictions.jsonl   one JSON line per scored sample (schema ``trd.record/1``,
                        `trd.runtime.records`; docs/SERVE.md), appended and synced to disk as soon as the
                        sample is scored, after its heatmap and mask are in place (so a line never
                        points at a missing file)
    heatmaps/<name>-<key>.png  overlay of the anomaly map on the RGB image (``key``: the first 12
                        hex digits of the scan's content key, so a rewritten ``latest.png`` gets new files)
    masks/<name>-<key>.png     pixels above the validation pixel threshold
    predict.json        the model that wrote the folder (path, sha256, trd version)

A scan is its content (`trd.data.identity.content_key` of its files), not its path: running again
with the same model skips the scans already in ``predictions.jsonl`` (and says how many), scores a
file rewritten under the same name as the new scan it is, and never scores the same content twice.
A killed run loses at most the sample in flight. Another model is refused unless ``overwrite``
removes the earlier outputs first. A second writer on a busy folder is refused at once
(`trd.runfolder.folder_lock`). Memory stays flat over any number of samples, and predict keeps no
preprocessing cache (a line scores each scan once; the cache would only grow). Every record also
goes to the result store (`trd.store`), committed before its ledger line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import apply_input_overrides
from ..data.samples import Sample, unlabelled_samples
from ..errors import ConfigError, DataError, OutputError, write_error
from ..runfolder import folder_lock
from ..runtime.batches import iterate_batches
from ..runtime.heatmap import map_range, overlay, png_bytes, result_images, sample_maps
from ..runtime.records import build_record, model_record, path_identity, record_identity
from ..store import DEFAULT_NAME, DEFAULT_RETENTION, Retention, Store, open_store, parse_retention
from .engine import LoadedModel, load_model
from .stored import scan_key, store_result

Log = Callable[[str], None]
PREDICTIONS, MANIFEST = "predictions.jsonl", "predict.json"
_OUTPUTS = (PREDICTIONS, MANIFEST, "heatmaps", "masks")


#: Hex digits of the content key in output file names (48 bits: names of one folder never collide).
KEY_CHARS = 12


class Ledger:
    """``predictions.jsonl`` of an output folder: the one place that says which scans are done, and
    appending new ones.

    Opening it drops lines a killed run left incomplete (a torn last line, or a line whose heatmap
    or mask is gone), rewriting the file atomically. ``done`` holds the identity of every recorded
    scan (`trd.runtime.records.record_identity`: its content key; for lines of trd before keys,
    the resolved paths of its files).
    """

    def __init__(self, out: Path, log: Log) -> None:
        self.path = out / PREDICTIONS
        self.done: set[str] = set()
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_bytes().split(b"\n"):
            record = _record(line, out)
            if record is None:
                dropped += bool(line.strip())
                continue
            kept.append(line + b"\n")
            self.done.add(record_identity(record))
        if dropped:
            atomic_write_bytes(self.path, b"".join(kept))
            log(f"predict: dropped {dropped} incomplete line(s) of {self.path} (an interrupted run); "
                "those samples are scored again")

    def has(self, sample: Sample, key: str) -> bool:
        """Whether the scan ``sample`` (content key ``key``) is recorded (lines of older trd: by path)."""
        return key in self.done or path_identity(sample.rgb, sample.xyz) in self.done

    def append(self, record: dict[str, Any]) -> None:
        """Append one line and sync it; on failure the file is cut back to its previous end."""
        data = (json.dumps(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        size = os.fstat(fd).st_size
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise write_error(self.path, exc) from None
        finally:
            os.close(fd)
        self.done.add(record_identity(record))


def _record(line: bytes, out: Path) -> dict[str, Any] | None:
    """A complete line whose files exist, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not {"name", "rgb", "xyz", "heatmap", "mask"} <= set(record):
        return None
    if not ((out / record["heatmap"]).is_file() and (out / record["mask"]).is_file()):
        return None
    return record


def _claim(out: Path, model_file: Path, sha: str, overwrite: bool) -> None:
    """Make sure the folder holds only outputs of this model (or none); write its manifest."""
    manifest = out / MANIFEST
    owner = None
    if manifest.is_file():
        try:
            owner = json.loads(manifest.read_text())
        except (ValueError, OSError):
            owner = {}
    elif (out / PREDICTIONS).is_file():
        owner = {}  # predictions of an unknown model (an older trd)
    if owner is not None and owner.get("sha256") != sha:
        if not overwrite:
            theirs = owner.get("model", "an unknown model")
            raise OutputError(out, f"holds predictions of another model ({theirs}); use another --out, or "
                                   "--overwrite to replace them")
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if not manifest.is_file() or owner is None or owner.get("sha256") != sha:
        atomic_write_text(manifest, json.dumps({"model": str(model_file), "sha256": sha, "trd_version": __version__,
                                                "created": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")


def predict_samples(model: LoadedModel, samples: list[Sample], out_dir: Path, batch_size: int = 8,
                    unpaired: list[tuple[str, str]] = (), log: Log = print, store: Store | None = None,
                    ledger: Ledger | None = None) -> dict[str, Any]:
    """Score ``samples`` with ``model`` into ``out_dir`` (which the caller has locked and claimed) and
    into ``store``: each record is committed to the store before its ledger line is written, so a
    kill in between rescores the sample and the store keeps it once. ``ledger``: the folder's
    `Ledger` when the caller keeps one open (the watcher), else it is read here."""
    ledger = ledger or Ledger(out_dir, log)
    failed = [{"file": f, "error": e} for f, e in unpaired]
    todo, keys, seen, skipped = [], [], set(), 0
    for sample in samples:
        try:
            key = scan_key(sample)
        except DataError as exc:
            failed.append({"file": str(sample.rgb), "error": str(exc)})
            continue
        if ledger.has(sample, key) or key in seen:  # the same content is never scored twice
            skipped += 1
            continue
        todo.append(sample)
        keys.append(key)
        seen.add(key)
    if skipped:
        log(f"predict: {skipped} of {len(samples)} samples are already in {ledger.path} (the same content); "
            f"scoring the other {len(todo)}")
    thresholds = model.thresholds
    vmin, vmax = map_range(thresholds.pixel)
    about = model_record(model.sha256, model.name)
    n_scored = n_anomalous = 0
    # No preprocessing cache: a line scores each scan once, a cache would only grow.
    for batch in iterate_batches(todo, model.config.data, batch_size, reference=model.reference):
        failed += [{"file": str(todo[i].rgb), "error": msg} for i, msg in batch.errors]
        if not batch.indices:
            continue
        start = time.perf_counter()
        out = model.engine(batch.rgb, batch.x3d)
        score_ms = (time.perf_counter() - start) * 1e3 / len(batch.indices)
        maps = out["anomaly_map"][:, 0]
        for j, index in enumerate(batch.indices):
            written = time.perf_counter()
            sample, key = todo[index], keys[index]
            name = sample.rgb.stem
            stem = f"{name}-{key[:KEY_CHARS]}"
            heat, mask = f"heatmaps/{stem}.png", f"masks/{stem}.png"
            if store is None:
                images = {"heatmap-fused.png": png_bytes(overlay(batch.display[j], maps[j], vmin, vmax)),
                          "mask.png": png_bytes((maps[j] > thresholds.pixel).astype(np.uint8) * 255)}
            else:
                images = result_images(batch.display[j], batch.display_3d[j], sample_maps(out, j), thresholds.pixel)
            atomic_write_bytes(out_dir / heat, images["heatmap-fused.png"])
            atomic_write_bytes(out_dir / mask, images["mask.png"])
            write_ms = (time.perf_counter() - written) * 1e3
            timings = {"read": batch.read_ms[j], "score": score_ms,
                       "total": batch.read_ms[j] + score_ms + write_ms}
            record = build_record(out, j, name=name, key=key, rgb=str(sample.rgb), xyz=str(sample.xyz),
                                  thresholds=thresholds, model=about, timings_ms=timings) | {"heatmap": heat, "mask": mask}
            if store is not None:  # first the store, then the ledger that says "done"
                store_result(store, record, sample, images, "predict")
            ledger.append(record)
            n_scored += 1
            n_anomalous += record["anomalous"]
    return {"scored": n_scored, "skipped": skipped, "anomalous": n_anomalous, "failed": failed,
            "total": len(ledger.done), "predictions": str(ledger.path), "engine": model.name,
            "store": None if store is None else store.where}


def predict(model_path: str | Path | None, out_dir: str | Path, *, input_dir: Path | None = None,
            rgb: Path | None = None, xyz: Path | None = None, onnx_path: Path | None = None,
            batch_size: int = 8, device: str = "auto", overwrite: bool = False, camera: Path | None = None,
            xyz_unit: str | None = None, flip_z: bool | None = None, explain: bool = False,
            engine: str = "auto", threads: int | None = None, store: str | None = None, store_files: str | None = None,
            retain: str = DEFAULT_RETENTION, watch_dir: Path | None = None, settle: float = 2.0, poll: float = 0.5,
            log: Log = print) -> dict[str, Any]:
    """Score unlabelled pairs with a checkpoint or an exported ONNX file; bad samples are skipped.

    Args:
        model_path: a ``model.pt`` (exactly one of ``model_path`` and ``onnx_path``).
        out_dir: receives ``predictions.jsonl``, ``heatmaps/``, ``masks/`` and ``predict.json``; a
            folder that already holds this model's predictions is continued (done samples are
            skipped), one of another model is refused unless ``overwrite``.
        input_dir: a folder with ``rgb/`` and the model's 3D folder (``xyz/``, ``depth/`` or
            ``normals/``), files paired by name; or
        rgb, xyz: one RGB image and its 3D file.
        onnx_path: an ONNX file written by `trd.api.export`, run by onnxruntime (no torch needed).
        batch_size: pairs scored together.
        device: "auto", "cpu", "cuda" or "cuda:N" (the torch engine's device).
        overwrite: replace the predictions of another model in ``out_dir``.
        camera: camera.json of depth PNG inputs (default: ``<input>/camera.json``).
        xyz_unit, flip_z: how these scans' clouds are stored, when it differs from the training
            data (default: as trained).
        explain: add ``modality_attribution`` to each record (`trd.detector.Detector.explain`;
            three model passes per sample; needs ``model_path`` and the torch engine).
        engine: "auto" (onnxruntime on a CPU when installed, the export cached beside the model),
            "onnx" or "torch" (`trd.workflows.engine`).
        threads: intra-op threads (default: the CPUs this process may use).
        store, store_files, retain: the result store every record also goes to (`trd.store`: a SQLite
            file or a database URL; default ``results.db`` beside the model; "none": no store), its
            files folder and its retention (`trd.store.parse_retention`).
        watch_dir, settle, poll: instead of ``input_dir``: score the pairs a scanner writes into
            ``watch_dir`` (laid out like ``input_dir``) as they become complete, until SIGINT or
            SIGTERM (`trd.workflows.watch`: unchanged for ``settle`` s, looked at every ``poll`` s).
        log: where progress lines go.

    Returns:
        ``{"scored", "skipped", "anomalous", "failed": [{"file", "error"}, ...], "total", "predictions",
        "engine", "store"}``: counts of this run, the samples that could not be scored, the number of
        lines now in ``predictions.jsonl``, the engine that scored and the store written (or None).

    Example:
        >>> from trd import api
        >>> api.predict("runs/puck/model.pt", "preds", input_dir=Path("line_scans"))  # doctest: +SKIP
        {'scored': 60, 'skipped': 0, 'anomalous': 3, 'failed': [], 'total': 60, ...}
    """
    out_dir = Path(out_dir)
    retention = parse_retention(retain)
    if watch_dir is not None and (input_dir, rgb, xyz) != (None, None, None):
        raise ConfigError("--watch DIR scores what appears in DIR: give it without --input, --rgb or --xyz")
    if watch_dir is not None and not watch_dir.is_dir():
        raise DataError(watch_dir, "folder not found (the watched folder must exist; rgb/ and the 3D folder may "
                                   "appear later)")
    for given in (input_dir, rgb, xyz, camera):  # before the (slow) model load
        if given is not None and not given.exists():
            raise DataError(given, "folder not found" if given is input_dir else "file not found")
    model = load_model(None if model_path is None else Path(model_path), None if onnx_path is None else Path(onnx_path),
                       engine=engine, device=device, threads=threads, explain=explain, log=log)
    apply_input_overrides(model.config, xyz_unit, flip_z)
    if watch_dir is None:
        samples, unpaired = unlabelled_samples(model.config.data, input_dir, rgb, xyz, camera)
    results = open_model_store(model.files[0], store, store_files, retention, log)  # before the output folder
    try:
        with folder_lock(out_dir, "trd predict --watch" if watch_dir else "trd predict"):
            _claim(out_dir, model.files[0], model.sha256, overwrite)
            if watch_dir is not None:
                from .watch import watch  # watch builds on predict_samples

                return watch(model, watch_dir, out_dir, results, settle=settle, poll=poll, batch_size=batch_size,
                             camera=camera, log=log)
            return predict_samples(model, samples, out_dir, batch_size, unpaired, log, results)
    finally:
        if results is not None:
            results.close()


def open_model_store(model_file: Path, store: str | None, files: str | None, retention: Retention,
                     log: Log) -> Store | None:
    """The store ``store`` names (default: ``results.db`` beside the model file; "none": None)."""
    if store is not None and store.lower() == "none":
        return None
    return open_store(store or str(model_file.parent / DEFAULT_NAME), files, retention, log)
