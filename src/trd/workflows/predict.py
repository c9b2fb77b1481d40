"""``trd predict``: score new RGB + 3D pairs, streaming and resumable, one writer per output folder.

The output folder holds::

    predictions.jsonl   one JSON line per scored sample (schema ``trd.record/1``,
                        `trd.runtime.records`; docs/SERVE.md), appended and synced to disk as soon as the
                        sample is scored, after its heatmap and mask are in place (so a line never
                        points at a missing file)
    heatmaps/<name>.png overlay of the anomaly map on the RGB image
    masks/<name>.png    pixels above the validation pixel threshold
    predict.json        the model that wrote the folder (path, sha256, trd version)

A killed run loses at most the sample in flight. Running again with the same model skips the
samples already in ``predictions.jsonl`` (and says how many); another model is refused unless
``overwrite`` removes the earlier outputs first. A second writer on a busy folder is refused at once
(`trd.runfolder.folder_lock`). Memory stays flat over any number of samples, and predict keeps no
preprocessing cache (a line scores each scan once; the cache would only grow).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from .. import __version__
from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import apply_input_overrides
from ..data.samples import Sample, unlabelled_samples
from ..errors import DataError, OutputError, write_error
from ..runfolder import folder_lock
from ..runtime.batches import iterate_batches
from ..runtime.records import model_record
from ..runtime.scored import Scored, Target, score_batch
from ..runtime.providers import check_precision
from .engine import LoadedModel, OrtChoice, load_model

Log = Callable[[str], None]
PREDICTIONS, MANIFEST = "predictions.jsonl", "predict.json"
_OUTPUTS = (PREDICTIONS, MANIFEST, "heatmaps", "masks")


def target_of(sample: Sample) -> Target:
    """How ``sample`` is named in the output folder (the RGB file's stem)."""
    return Target(sample.rgb.stem, str(sample.rgb), str(sample.xyz), sample.rgb.stem)


def source_of(rgb: str | Path, xyz: str | Path) -> str:
    """Which scan an output name holds: its input files' resolved paths."""
    return f"{Path(rgb).resolve()}\n{Path(xyz).resolve()}"


class Ledger:
    """``predictions.jsonl`` of an output folder: which samples are done, and appending new ones.

    Opening it drops lines a killed run left incomplete (a torn last line, or a line whose heatmap
    or mask is gone), rewriting the file atomically. ``done`` maps each output name to the sample
    source it came from (`source_of`).
    """

    def __init__(self, out: Path, log: Log) -> None:
        self.out = out
        self.path = out / PREDICTIONS
        self.done: dict[str, str] = {}
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_bytes().split(b"\n"):
            record = complete_record(line, out)
            if record is None:
                dropped += bool(line.strip())
                continue
            kept.append(line + b"\n")
            self.done[record["name"]] = source_of(record["rgb"], record["xyz"])
        if dropped:
            atomic_write_bytes(self.path, b"".join(kept))
            log(f"predict: dropped {dropped} incomplete line(s) of {self.path} (an interrupted run); "
                "those samples are scored again")

    def state(self, name: str, source: str) -> str:
        """"new", "done" (this scan is recorded) or "clash" (another scan holds the output name)."""
        if name not in self.done:
            return "new"
        return "done" if self.done[name] == source else "clash"

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
        self.done[record["name"]] = source_of(record["rgb"], record["xyz"])

    def write(self, scored: Scored) -> None:
        """Write a scored sample: its heatmap and mask (atomically), then its line (whose ``total``
        time then includes the writing)."""
        start = time.perf_counter()
        record = scored.record
        atomic_write_bytes(self.out / record["heatmap"], scored.heatmap)
        atomic_write_bytes(self.out / record["mask"], scored.mask)
        timings = record["timings_ms"]
        timings["total"] = round(timings["total"] + (time.perf_counter() - start) * 1e3, 2)
        self.append(record)

    def copy(self, record: dict[str, Any], folder: Path) -> None:
        """Copy ``record`` of another output ``folder`` with its heatmap and mask, unchanged."""
        for key in ("heatmap", "mask"):
            atomic_write_bytes(self.out / record[key], (folder / record[key]).read_bytes())
        self.append(record)


def complete_record(line: bytes, out: Path) -> dict[str, Any] | None:
    """A complete line of ``out``'s ledger whose files exist, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not {"name", "rgb", "xyz", "heatmap", "mask"} <= set(record):
        return None
    if not ((out / record["heatmap"]).is_file() and (out / record["mask"]).is_file()):
        return None
    return record


def claim(out: Path, model_file: Path, sha: str, overwrite: bool) -> None:
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


def plan(ledger: Ledger, samples: list[Sample], unpaired: list[tuple[str, str]] = (),
         log: Log = print) -> tuple[list[Sample], list[dict[str, str]], int]:
    """What is left to score: the samples not in ``ledger``, the samples that cannot be scored
    (``{"file", "error"}``, starting with ``unpaired``), and how many are done already."""
    failed = [{"file": f, "error": e} for f, e in unpaired]
    todo, skipped = [], 0
    for sample in samples:
        target = target_of(sample)
        state = ledger.state(target.name, source_of(sample.rgb, sample.xyz))
        if state == "new":
            todo.append(sample)
        elif state == "done":
            skipped += 1
        else:
            failed.append({"file": str(sample.rgb), "error": f"{ledger.out}: the output name {target.name!r} is "
                                                            "already used by another sample in this folder; use another --out"})
    if skipped:
        log(f"predict: {skipped} of {len(samples)} samples are already in {ledger.path}; scoring the other {len(todo)}")
    return todo, failed, skipped


def summary(model: LoadedModel, ledger: Ledger, scored: int, anomalous: int, skipped: int,
            failed: list[dict[str, str]]) -> dict[str, Any]:
    """The summary ``trd predict`` prints."""
    return {"scored": scored, "skipped": skipped, "anomalous": anomalous, "failed": failed, "total": len(ledger.done),
            "predictions": str(ledger.path), "engine": model.name, "provider": model.provider,
            "precision": model.precision}


def predict_samples(model: LoadedModel, samples: list[Sample], out_dir: Path, batch_size: int = 8,
                    unpaired: list[tuple[str, str]] = (), log: Log = print) -> dict[str, Any]:
    """Score ``samples`` with ``model`` into ``out_dir`` (which the caller has locked and claimed)."""
    ledger = Ledger(out_dir, log)
    todo, failed, skipped = plan(ledger, samples, unpaired, log)
    targets = [target_of(s) for s in todo]
    about = model_record(model.sha256, model.name, model.provider, model.precision)
    n_scored = n_anomalous = 0
    # No preprocessing cache: a line scores each scan once, a cache would only grow.
    for batch in iterate_batches(todo, model.config.data, batch_size, reference=model.reference):
        failed += [{"file": str(todo[i].rgb), "error": msg} for i, msg in batch.errors]
        for scored in score_batch(model.engine, batch, targets, model.thresholds, about):
            ledger.write(scored)
            n_scored += 1
            n_anomalous += scored.record["anomalous"]
    return summary(model, ledger, n_scored, n_anomalous, skipped, failed)


def predict(model_path: str | Path | None, out_dir: str | Path, *, input_dir: Path | None = None,
            rgb: Path | None = None, xyz: Path | None = None, onnx_path: Path | None = None,
            batch_size: int = 8, device: str = "auto", overwrite: bool = False, camera: Path | None = None,
            xyz_unit: str | None = None, flip_z: bool | None = None, explain: bool = False,
            engine: str = "auto", threads: int | None = None, ep: str = "auto", precision: str = "fp32",
            shard: str | None = None, ray: str | None = None, workers: int | None = None,
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
        threads: intra-op threads (default: the CPUs this process may use; with ``ray``: per
            worker, default 1).
        ep, precision: onnxruntime's execution provider and precision (`trd.runtime.providers`).
        shard: ``"i/N"``: score only the i-th of N parts of the samples (1 <= i <= N; a job
            array's task), split by a hash of each sample's file name (`trd.workflows.shards`);
            `trd.workflows.shards.merge_predictions` merges the parts' folders.
        ray: score on a Ray cluster (`trd.workflows.predict_ray`): ``"local"`` starts one on this
            machine, else the address of a running one (``HOST:PORT``, ``auto``, ``ray://...``).
        workers: Ray workers (default: the cluster's CPUs divided by ``threads``).
        log: where progress lines go.

    Returns:
        ``{"scored", "skipped", "anomalous", "failed": [{"file", "error"}, ...], "total", "predictions",
        "engine", "provider", "precision"}``: counts of this run, the samples that could not be
        scored, the number of lines now in ``predictions.jsonl`` and what scored.

    Example:
        >>> from trd import api
        >>> api.predict("runs/puck/model.pt", "preds", input_dir=Path("line_scans"))  # doctest: +SKIP
        {'scored': 60, 'skipped': 0, 'anomalous': 3, 'failed': [], 'total': 60, ...}
    """
    out_dir = Path(out_dir)
    for given in (input_dir, rgb, xyz, camera):  # before the (slow) model load
        if given is not None and not given.exists():
            raise DataError(given, "folder not found" if given is input_dir else "file not found")
    from .predict_ray import RayRun, check_ray, predict_on_ray  # they use this module's ledger
    from .shards import parse_shard, shard_of

    part = parse_shard(shard) if shard is not None else None
    choice = OrtChoice(ep, precision, batch_size)
    if ray is not None:  # workers score; the driver only reads the model's metadata, on the CPU
        check_ray(engine, explain, workers)
        check_precision(ep, precision)
        choice, engine = OrtChoice("cpu", "fp32", batch_size), "onnx"
    model = load_model(None if model_path is None else Path(model_path), None if onnx_path is None else Path(onnx_path),
                       engine=engine, device=device, threads=threads, explain=explain, choice=choice, log=log)
    apply_input_overrides(model.config, xyz_unit, flip_z)
    samples, unpaired = unlabelled_samples(model.config.data, input_dir, rgb, xyz, camera)
    if part is not None:
        samples = shard_of(samples, part, input_dir)
    with folder_lock(out_dir, "trd predict"):
        claim(out_dir, model.files[0], model.sha256, overwrite)
        if ray is not None:
            return predict_on_ray(model, samples, out_dir, RayRun(ray, workers, threads or 1, ep, precision, batch_size,
                                                                  xyz_unit, flip_z), unpaired, log)
        return predict_samples(model, samples, out_dir, batch_size, unpaired, log)
