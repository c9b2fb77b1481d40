"""Out of and into the store: tables (CSV, Parquet), reviewed scans as a dataset, older ledgers.

- `export_table`: the records matching a query as CSV (stdlib ``csv``) or Parquet (pyarrow, the
  optional ``parquet`` extra: 174 MB installed, so not in the runtime install); the record itself is
  one JSON column.
- `export_defects`: the confirmed defects (and, on request, the scans labelled good) in the dataset
  folder layout ``<out>/test/<defect type>/{rgb, xyz|depth|normals}/`` with ``labels.csv``. A
  confirmed defect has no pixel mask, so no ``gt/`` is written: the export is for image-level
  evaluation (``labels.csv``) and for collecting data to retrain or to draw masks on.
- `import_ledger`: the lines of a ``predictions.jsonl`` (any version trd wrote) as records, with
  their scan files and heatmap where those are still on disk.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_save, atomic_write_bytes
from ..data.identity import content_key, files_sha256
from ..data.io import staged_dir
from ..data.readers import READERS
from ..errors import ConfigError, OutputError, write_error
from .core import Store, Stored, utc_text

Log = Callable[[str], None]
COLUMNS = ("id", "time", "model_sha256", "key", "name", "source", "score", "anomalous", "label", "defect_type",
           "label_by", "label_at", "files", "record")
PARQUET_EXTRA = "pip install 'trd-anomaly[parquet]'"


def _row(s: Stored) -> dict[str, Any]:
    return {"id": s.id, "time": utc_text(s.created_at), "model_sha256": s.model_sha256, "key": s.key, "name": s.name,
            "source": s.source, "score": s.score, "anomalous": s.anomalous, "label": s.label,
            "defect_type": s.defect_type, "label_by": s.label_by, "label_at": utc_text(s.label_at), "files": s.files,
            "record": json.dumps(s.record, separators=(",", ":"))}


def export_table(store: Store, out: Path, **filters: Any) -> int:
    """Write the records matching ``filters`` (`Store.query`'s) to ``out`` (.csv or .parquet), oldest
    first, atomically; how many."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: the table format follows the suffix: .csv or .parquet")
    rows = [_row(s) for s in store.iterate(**filters)]
    if suffix == ".csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out, text.getvalue().encode())
        return len(rows)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"--out {out}: Parquet needs pyarrow, which is not installed: {PARQUET_EXTRA}") from None
    types = {"id": pa.int64(), "score": pa.float64(), "anomalous": pa.bool_()}
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    table = pa.table({c: [r[c] for r in rows] for c in COLUMNS}, schema=schema)
    atomic_save(out, lambda fh: pq.write_table(table, fh, compression="zstd"))
    return len(rows)


def _scan_files(folder: Path) -> tuple[Path, Path, Path | None]:
    """(RGB file, 3D file, camera.json or None) of a record's folder (`trd.store.files`)."""
    rgb = next(folder.glob("rgb.*"), None)
    x3d = next(folder.glob("3d.*"), None)
    if rgb is None or x3d is None:
        raise OutputError(folder, "the stored scan files are missing (rgb.* and 3d.* expected)")
    camera = folder / "camera.json"
    return rgb, x3d, camera if camera.is_file() else None


def export_defects(store: Store, out: Path, *, with_good: bool = False, model: str | None = None,
                   log: Log = print) -> dict[str, int]:
    """The scans labelled defect (and good, with ``with_good``) as ``out/test/<type>/...``; each scan
    once (by content key) however many models scored it. Counts per folder."""
    if out.exists() and any(out.iterdir()):
        raise OutputError(out, "exists and is not empty; choose a new folder")
    chosen: dict[str, Stored] = {}
    skipped = 0
    for s in store.iterate(label="any", model=model):
        if s.label == "good" and not with_good:
            continue
        if s.files is None or s.kind not in READERS:
            skipped += 1
            continue
        chosen.setdefault(s.key, s)
    if not chosen:
        raise ConfigError(f"{store.where}: no labelled scans with stored files to export"
                          + (f" ({skipped} labelled records have no files)" if skipped else ""))
    counts: dict[str, int] = {}
    cameras: set[str] = set()
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["file", "label", "defect_type", "by", "at", "score", "anomalous", "model_sha256", "id", "key"])
    with staged_dir(out) as tmp:
        for s in chosen.values():
            folder = "good" if s.label == "good" else s.defect_type
            rgb, x3d, camera = _scan_files(store.root / s.files)
            stem = f"{s.id}_{''.join(c if c.isalnum() or c in '-_' else '_' for c in s.name)[:80]}"
            for sub, source in (("rgb", rgb), (READERS[s.kind].folder, x3d)):
                target = tmp / "test" / folder / sub / f"{stem}{source.suffix.lower()}"
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(source.read_bytes())
                except OSError as exc:
                    raise write_error(target, exc) from None
            if camera is not None:
                cameras.add(files_sha256(camera))
                (tmp / "camera.json").write_bytes(camera.read_bytes())
            counts[folder] = counts.get(folder, 0) + 1
            writer.writerow([f"test/{folder}/rgb/{stem}{rgb.suffix.lower()}", s.label, s.defect_type, s.label_by,
                             utc_text(s.label_at), s.score, s.anomalous, s.model_sha256, s.id, s.key])
        if len(cameras) > 1:
            raise ConfigError(f"{store.where}: the labelled depth scans come with {len(cameras)} different camera.json "
                              "files; a dataset folder has one: export each model's scans (--model-sha)")
        (tmp / "labels.csv").write_text(table.getvalue())
    log(f"store: exported {sum(counts.values())} scan(s) to {out} "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + (f"; {skipped} labelled record(s) without stored files left out" if skipped else ""))
    return counts


def _kind(path: Path) -> str | None:
    """The 3D kind of a ledger's input file: its folder (xyz/, depth/, normals/) and suffix."""
    return next((r.kind for r in READERS.values()
                 if r.folder == path.parent.name and path.suffix.lower() in r.suffixes), None)


def import_ledger(store: Store, ledger: Path, log: Log = print) -> dict[str, int]:
    """Store the lines of a ``predictions.jsonl`` (source "import"); their scan files and heatmap
    are copied where they still exist, and a line without a content key gets one from its files
    (or, where those are gone, from its paths: such a record has no files). Counts."""
    try:
        lines = ledger.read_bytes().split(b"\n")
    except OSError as exc:
        raise ConfigError(f"{ledger}: cannot read: {exc.strerror or exc}") from None
    manifest = ledger.with_name("predict.json")
    owner = json.loads(manifest.read_text()).get("sha256") if manifest.is_file() else None
    counts = {"imported": 0, "already": 0, "unreadable": 0}
    when = dt.datetime.fromtimestamp(ledger.stat().st_mtime, dt.timezone.utc)
    for line in filter(bytes.strip, lines):
        try:
            record = json.loads(line)
            rgb, x3d = Path(record["rgb"]), Path(record["xyz"])
        except (ValueError, KeyError, TypeError):
            counts["unreadable"] += 1
            continue
        record.setdefault("model", {"sha256": owner})
        if not record["model"].get("sha256"):
            counts["unreadable"] += 1
            continue
        have = rgb.is_file() and x3d.is_file()
        record.setdefault("key", content_key(rgb, x3d) if have else f"paths:{rgb.resolve()}\n{x3d.resolve()}")
        staged = None
        if have:
            outputs = {"heatmap-fused.png": ledger.parent / str(record.get("heatmap")),
                       "mask.png": ledger.parent / str(record.get("mask"))}
            copies = {"rgb" + rgb.suffix.lower(): rgb, "3d" + x3d.suffix.lower(): x3d}
            staged = store.stage(copies | {k: v for k, v in outputs.items() if v.is_file()}, {})
        _, new = store.add(record, source="import", kind=_kind(x3d) if have else None, staged=staged, created_at=when)
        counts["imported" if new else "already"] += 1
    log(f"store: imported {counts['imported']} record(s) of {ledger} into {store.where} ({counts['already']} were "
        f"there already, {counts['unreadable']} line(s) unreadable or without a model)")
    return counts
