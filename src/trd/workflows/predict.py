"""``trd predict``: score new RGB + 3D pairs, streaming and resumable, one writer per output folder.

The output folder holds::

    predictions.jsonl   one JSON line per scored sample (schema ``trd.record/2``,
                        `trd.runtime.records`; docs/SERVE.md), appended and synced to disk as soon as the
                        sample is scored, after its heatmap, mask and outline are in place (so a line
                        never points at a missing file)
    heatmaps/<name>-<key>.png  overlay of the anomaly map on the RGB image (model resolution; ``key``:
                        the first 12 hex digits of the scan's content key, so a rewritten ``latest.png``
                        gets new files)
    masks/<name>-<key>.png     pixels above the validation pixel threshold (model resolution)
    outlines/<name>-<key>.png  the RGB image as read with its defect regions outlined (`trd.runtime.findings`)
    predict.json        the model that wrote the folder (path, sha256, trd version)

A scan is its content (`trd.data.identity.content_key` of its files), not its path: running again
with the same model skips the scans already in ``predictions.jsonl`` (and says how many) from any
working directory and however the paths are written, scores a file rewritten under the same name
as the new scan it is, and never scores the same content twice. Scored samples are written in
order on a background thread while the next ones are read and scored (`trd.runtime.batches.InOrder`),
so a killed run loses at most the samples in flight (scored but not yet written: at most
`trd.runtime.batches.WRITE_AHEAD`), which the next run scores again. Another model is refused unless ``overwrite`` removes the earlier outputs first.
A second writer on a busy folder is refused at once (`trd.runfolder.folder_lock`). Memory stays
flat over any number of samples, and predict keeps no preprocessing cache (a line scores each scan
once; the cache would only grow). Every record also goes to the result store (`trd.store`),
committed before its ledger line.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..atomic import atomic_write_bytes, atomic_write_text
from ..config import apply_input_overrides
from ..console import Progress
from ..data.identity import content_key
from ..data.inputs import camera_stored
from ..data.samples import Sample, check_input_paths, unlabelled_samples
from ..errors import ConfigError, DataError, OutputError, write_error
from ..runfolder import folder_lock
from ..runtime.batches import InOrder, iterate_batches
from ..runtime.providers import check_precision
from ..runtime.records import Baseline, model_record, path_identity, record_identity
from ..runtime.scored import PICTURES, Scored, Target, score_batch
from ..store import DEFAULT_RETENTION, parse_retention
from .engine import LoadedModel, OrtChoice, load_model
from .stored import open_model_store, store_result

if TYPE_CHECKING:
    from ..store import Store

Log = Callable[[str], None]
PREDICTIONS, MANIFEST = "predictions.jsonl", "predict.json"
_OUTPUTS = (PREDICTIONS, MANIFEST, "heatmaps", "masks", "outlines")


class Ledger:
    """``predictions.jsonl`` of an output folder: the one place that says which scans are done, and
    appending new ones.

    Opening it drops lines a killed run left incomplete (a torn last line, or a line whose heatmap
    or mask is gone), rewriting the file atomically. ``done`` holds the identity of every recorded
    scan (`trd.runtime.records.record_identity`: its content key; for lines of trd before keys,
    the resolved paths of its files); ``flagged`` the anomalous ones by identity, as the summary
    lists them (kept while appending, so a long watch never reads the file again).
    """

    def __init__(self, out: Path, log: Log) -> None:
        self.path = out / PREDICTIONS
        self.done: set[str] = set()
        self.flagged: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_bytes().split(b"\n"):
            record = complete_record(line, out)
            if record is None:
                dropped += bool(line.strip())
                continue
            kept.append(line + b"\n")
            self._add(record)
        if dropped:
            atomic_write_bytes(self.path, b"".join(kept))
            log(f"predict: dropped {dropped} incomplete line(s) of {self.path} (an interrupted run); "
                "those samples are scored again")

    def has(self, sample: Sample, key: str) -> bool:
        """Whether the scan ``sample`` (content key ``key``) is recorded (lines of older trd: by path)."""
        return key in self.done or path_identity(sample.rgb, sample.xyz) in self.done

    def append(self, record: dict[str, Any]) -> None:
        """Append one line and sync it; the line is whole or absent: on failure the file is cut back
        to its previous end."""
        data = (json.dumps(record) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(self.path, exc) from None
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:  # a write may take only part of the line (a nearly full disk): write the rest
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise write_error(self.path, exc) from None
        finally:
            os.close(fd)
        self._add(record)

    def _add(self, record: dict[str, Any]) -> None:
        identity = record_identity(record)
        self.done.add(identity)
        if record.get("anomalous"):
            out = self.path.parent
            self.flagged[identity] = {"name": record["name"], "score": record.get("score"),
                                      **{k: str(out / record[k]) for k in ("heatmap", "mask", "outline") if k in record}}

    def write(self, scored: Scored, before_line: Callable[[], Any] | None = None) -> None:
        """Write a scored sample: its pictures (atomically), then ``before_line()`` (the result
        store's commit), then its line; the record's ``total`` time includes writing the pictures."""
        start = time.perf_counter()
        record = scored.record
        for what, name in PICTURES.items():
            atomic_write_bytes(self.path.parent / record[what], scored.images[name])
        timings = record["timings_ms"]
        timings["total"] = round(timings["total"] + (time.perf_counter() - start) * 1e3, 2)
        if before_line is not None:  # the store keeps the same record as the line
            before_line()
        self.append(record)

    def copy(self, record: dict[str, Any], folder: Path) -> None:
        """Copy ``record`` of another output ``folder`` with its pictures, unchanged."""
        for what in PICTURES:
            if what in record:
                atomic_write_bytes(self.path.parent / record[what], (folder / record[what]).read_bytes())
        self.append(record)


def shown_path(path: Path, base: Path | None) -> str:
    """How a record names an input file: relative to the input folder ``base`` (else its file name),
    never as an absolute path of this machine."""
    if base is not None and path.is_relative_to(base):
        return path.relative_to(base).as_posix()
    return path.name


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


def owner_of(model: LoadedModel) -> dict[str, Any]:
    """What an output folder's manifest says of the model that writes it."""
    return {"model": str(model.files[0]), "sha256": model.sha256, "source_sha256": model.source_sha256}


def claim(out: Path, model: dict[str, Any], overwrite: bool, log: Log = print) -> None:
    """Make sure the folder holds only outputs of ``model`` (`owner_of`) or none; write its manifest.

    The same model in another form owns the folder too: a model.pt and its ONNX export (the export
    names its model.pt by content, ``source_sha256``), so the Deploy steps can switch engines on
    one ``--out``; each record says which engine scored it.
    """
    manifest = out / MANIFEST
    owner = None
    if manifest.is_file():
        try:
            owner = json.loads(manifest.read_text())
        except (ValueError, OSError):
            owner = {}
    elif (out / PREDICTIONS).is_file():
        owner = {}  # predictions of an unknown model (an older trd)
    ours = {model.get("sha256"), model.get("source_sha256")} - {None}
    theirs = set() if owner is None else {owner.get("sha256"), owner.get("source_sha256")} - {None}
    if owner is not None and not ours & theirs:
        if not overwrite:
            name = owner.get("model", "an unknown model")
            raise OutputError(out, f"holds predictions of another model ({name}); use another --out, or "
                                   "--overwrite to replace them")
        for name in _OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        owner = None
    elif owner is not None and owner.get("sha256") != model.get("sha256"):
        log(f"predict: {out} holds predictions of the same model as {owner.get('model')}; continuing with "
            f"{model.get('model')}; each record names the engine that scored it")
    if owner is None:
        atomic_write_text(manifest, json.dumps(dict(model) | {"trd_version": __version__, "created": time.strftime(
            "%Y-%m-%d %H:%M:%S")}, indent=2) + "\n")


def target_of(sample: Sample, key: str, base: Path | None) -> Target:
    """How ``sample`` (content ``key``) is named in the output folder and its record; files relative
    to ``base`` (the input folder; None: by file name)."""
    return Target(sample.rgb.stem, shown_path(sample.rgb, base), shown_path(sample.xyz, base), key)


def plan(ledger: Ledger, samples: list[Sample], unpaired: list[tuple[str, str]] = (), base: Path | None = None,
         log: Log = print) -> tuple[list[Sample], list[Target], list[dict[str, str]], int, set[str]]:
    """What is left to score: the samples not in ``ledger`` (recorded, or the same content as a
    sample before them), their targets, the samples that cannot be scored (starting with
    ``unpaired``), how many are done already, and the identities of every readable sample given
    (`record_identity`; with the path identity of older lines). A target's key is "" where the files
    cannot be read now: reading them reports the reader's own message."""
    failed = [{"file": f, "error": e} for f, e in unpaired]
    todo: list[Sample] = []
    targets: list[Target] = []
    seen: set[str] = set()
    given: set[str] = set()
    for sample in samples:
        try:
            key = content_key(sample.rgb, sample.xyz, sample.camera)
        except DataError:
            key = ""
        if key:
            given |= {key, path_identity(sample.rgb, sample.xyz)}
            if ledger.has(sample, key) or key in seen:
                continue
        todo.append(sample)
        targets.append(target_of(sample, key, base))
        seen.add(key)
    skipped = len(samples) - len(todo)
    if skipped:
        log(f"predict: {skipped} of {len(samples)} samples are already in {ledger.path} (same content); "
            f"scoring the other {len(todo)}")
    return todo, targets, failed, skipped, given


def summary(model: LoadedModel, ledger: Ledger, scored: int, skipped: int, failed: list[dict[str, str]],
            given: set[str], total: int) -> dict[str, Any]:
    """The summary ``trd predict`` prints: counts over the ``total`` scans given (``given``: their
    identities), the anomalous ones among them (scored now or earlier) and what scored."""
    flagged = _flagged(ledger, given)
    return {"scored": scored, "skipped": skipped, "anomalous": len(flagged), "failed": failed, "total": total,
            "lines": len(ledger.done), "flagged": flagged, "predictions": str(ledger.path),
            "heatmaps": str(ledger.path.parent / "heatmaps"), "engine": model.name, "provider": model.provider,
            "precision": model.precision}


def predict_samples(model: LoadedModel, samples: list[Sample], out_dir: Path, batch_size: int = 8,
                    unpaired: list[tuple[str, str]] = (), log: Log = print, base: Path | None = None,
                    store: Store | None = None, ledger: Ledger | None = None) -> dict[str, Any]:
    """Score ``samples`` with ``model`` into ``out_dir`` (which the caller has locked and claimed) and
    into ``store``: each record is committed to the store before its ledger line is written, so a
    kill in between rescores the sample and the store keeps it once. Records name the files
    relative to ``base`` (the input folder; None: by file name). ``ledger``: the folder's `Ledger`
    when the caller keeps one open (the watcher), else it is read here."""
    ledger = ledger or Ledger(out_dir, log)
    todo, targets, failed, skipped, given = plan(ledger, samples, unpaired, base, log)
    about = model_record(model.sha256, model.name, model.provider, model.precision)
    baseline = Baseline.of(model.validation_scores, model.reference)
    n_scored = 0

    def write(scored: Scored, sample: Sample) -> None:  # first the store, then the ledger line that says "done"
        ledger.write(scored, None if store is None else
                     lambda: store_result(store, scored.record, sample, scored.images, "predict"))

    # No preprocessing cache: a line scores each scan once, a cache would only grow.
    with Progress("predict", len(todo), "scans", log) as progress, InOrder("trd-write") as writes:
        for batch in iterate_batches(todo, model.config.data, batch_size, reference=model.reference):
            failed += [{"file": str(todo[i].rgb), "error": msg} for i, msg in batch.errors]
            progress.advance(len(batch.errors))
            for i in batch.indices:  # unreadable when listed, read now
                if not targets[i].key:
                    targets[i] = target_of(todo[i], content_key(todo[i].rgb, todo[i].xyz, todo[i].camera), base)
            for scored in score_batch(model.engine, batch, targets, model.config, model.thresholds, about, baseline,
                                      all_images=store is not None):
                writes.submit(write, scored, todo[scored.index])
                given.add(scored.record["key"])
                n_scored += 1
            progress.advance(len(batch.indices))
    return summary(model, ledger, n_scored, skipped, failed, given, len(samples) + len(unpaired)) | {
        "store": None if store is None else store.where}


def _flagged(ledger: Ledger, given: set[str]) -> list[dict[str, Any]]:
    """The anomalous scans among ``given`` (their identities, `record_identity`) that the ledger
    holds, scored in this run or an earlier one: name, score and where the heatmap, mask and outline
    are, highest score first (so a rerun reports the same as the run that scored them)."""
    flagged = [entry for identity, entry in ledger.flagged.items() if identity in given]
    return sorted(flagged, key=lambda r: -(r["score"] or 0.0))


def check_request(input_dir: Path | None, rgb: Path | None, xyz: Path | None, camera: Path | None,
                  watch_dir: Path | None = None, shard: str | None = None, ray: str | None = None) -> None:
    """The checks of a predict request that need no model (cheap, torch-free: the CLI runs them
    before anything heavy): the inputs exist, and ``--watch`` comes without other inputs."""
    if watch_dir is not None:
        if (input_dir, rgb, xyz) != (None, None, None):
            raise ConfigError("--watch DIR scores what appears in DIR: give it without --input, --rgb or --xyz")
        if (shard, ray) != (None, None):
            raise ConfigError("--watch scores scans as they come on this machine: give it without --shard or --ray")
        if not Path(watch_dir).is_dir():
            raise DataError(watch_dir, "folder not found (the watched folder must exist; rgb/ and the 3D folder "
                                       "may appear later)")
    check_input_paths(input_dir, rgb, xyz, camera)


def predict(model_path: str | Path | None, out_dir: str | Path, *, input_dir: Path | None = None,
            rgb: Path | None = None, xyz: Path | None = None, onnx_path: Path | None = None,
            batch_size: int = 8, device: str = "auto", overwrite: bool = False, camera: Path | None = None,
            xyz_unit: str | None = None, flip_z: bool | None = None, explain: bool = False,
            engine: str = "auto", threads: int | None = None, ep: str = "auto", precision: str = "fp32",
            shard: str | None = None, ray: str | None = None, workers: int | None = None, store: str | None = None,
            store_files: str | None = None, retain: str = DEFAULT_RETENTION, watch_dir: Path | None = None,
            settle: float = 2.0, poll: float = 0.5, log: Log = print) -> dict[str, Any]:
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
        camera: camera.json of depth PNG inputs (default: ``<input>/camera.json``; without one, the
            camera the model was trained with, when it keeps one).
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
        store, store_files, retain: the result store every record also goes to (`trd.store`: a SQLite
            file or a database URL; default ``results.db`` beside the model, or in ``out_dir`` where
            the model's folder cannot be written; "none": no store), its files folder and its
            retention (`trd.store.parse_retention`).
        watch_dir, settle, poll: instead of ``input_dir``: score the pairs a scanner writes into
            ``watch_dir`` (laid out like ``input_dir``) as they become complete, until SIGINT or
            SIGTERM (`trd.workflows.watch`: unchanged for ``settle`` s, looked at every ``poll`` s).
        log: where progress lines go.

    Returns:
        ``{"scored", "skipped", "anomalous", "failed": [{"file", "error"}, ...], "total", "lines",
        "flagged": [{"name", "score", "heatmap", "mask", "outline"}, ...], "predictions", "heatmaps",
        "engine", "provider", "precision", "store"}`` (with ``ray``: and ``workers``):
        the given samples scored in this run, those already in ``out_dir`` (skipped), how many of the
        given samples are anomalous (scored now or earlier), those that could not be scored, how many
        were given in all (``total`` = scored + skipped + failed, a scan without its 3D file
        included), the lines now in ``predictions.jsonl``, the anomalous ones by name (highest score
        first, with their heatmap, mask and outline), what scored (engine, execution provider,
        precision) and the store written (or None).

    Example:
        >>> from trd import api
        >>> api.predict("runs/puck/model.pt", "preds", input_dir=Path("line_scans"))  # doctest: +SKIP
        {'scored': 60, 'skipped': 0, 'anomalous': 3, 'failed': [], 'total': 60, 'lines': 60, 'flagged': [...], ...}
    """
    out_dir = Path(out_dir)
    check_request(input_dir, rgb, xyz, camera, watch_dir, shard, ray)  # before the (slow) model load
    retention = parse_retention(retain)
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
    if watch_dir is None:
        samples, unpaired = unlabelled_samples(model.config.data, input_dir, rgb, xyz, camera,
                                               camera_optional=camera_stored(model.reference))
        if part is not None:
            samples = shard_of(samples, part, input_dir)
    results = open_model_store(model.files[0], store, store_files, retention, log, out_dir)  # before the output folder
    try:
        with folder_lock(out_dir, "trd predict --watch" if watch_dir else "trd predict"):
            claim(out_dir, owner_of(model), overwrite, log)
            if watch_dir is not None:
                from .watch import watch  # watch builds on predict_samples

                return watch(model, Path(watch_dir), out_dir, results, settle=settle, poll=poll, batch_size=batch_size,
                             camera=camera, log=log)
            if ray is not None:
                return predict_on_ray(model, samples, out_dir, RayRun(ray, workers, threads or 1, ep, precision,
                                                                      batch_size, xyz_unit, flip_z),
                                      unpaired, log, base=input_dir, store=results)
            return predict_samples(model, samples, out_dir, batch_size, unpaired, log, base=input_dir, store=results)
    finally:
        if results is not None:
            results.close()

