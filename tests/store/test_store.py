"""The result store on both backends: SQLite (a file) and a real PostgreSQL server started for the test.

Records in and out (unique per model and scan), queries by time, decision, label and model, label
history with undo, retention that says what it removed and takes the files along, the schema
version, restarts, CSV/Parquet tables, reviewed scans as a dataset and older ledgers imported.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from trd.errors import ConfigError, TRDError
from trd.store import (NothingToUndo, NoSuchRecord, Retention, SchemaTooNew, open_store, parse_retention, review,
                       set_label, undo_label)
from trd.store.exports import export_defects, export_table, import_ledger
from trd.store.files import record_folder

SHA_A, SHA_B = "a" * 64, "b" * 64
UTC = dt.timezone.utc


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """(--store, --store-files) of a new store on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "results.db"), None
    return request.getfixturevalue("pg_url"), str(tmp_path / "files")


def record(name: str, score: float, sha: str = SHA_A, key: str | None = None, threshold: float = 1.0) -> dict:
    return {"schema": "trd.record/1", "name": name, "key": key or f"key-{name}", "rgb": f"{name}.png",
            "xyz": f"{name}.tiff", "score": score, "anomalous": score > threshold,
            "threshold": {"image": threshold}, "model": {"sha256": sha, "engine": "onnxruntime"}}


def scan_files(tmp_path: Path, name: str) -> dict[str, Path]:
    folder = tmp_path / "scans" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rgb.png").write_bytes(b"png " + name.encode())
    (folder / "3d.tiff").write_bytes(b"tiff " + name.encode())
    return {"rgb.png": folder / "rgb.png", "3d.tiff": folder / "3d.tiff"}


def test_records_are_unique_per_model_and_scan_and_queried_by_time_decision_label_model(target, tmp_path) -> None:
    store = open_store(*target, log=lambda _: None)
    early = dt.datetime(2026, 1, 1, tzinfo=UTC)
    first, new = store.add(record("s1", 2.0), source="serve", kind="xyz_tiff", created_at=early,
                           staged=store.stage(scan_files(tmp_path, "s1"), {"heatmap-fused.png": b"h"}))
    assert new and first.id == 1 and (store.root / first.files / "heatmap-fused.png").read_bytes() == b"h"
    again, new = store.add(record("s1", 2.0) | {"timings_ms": {"total": 9}}, source="predict",
                           staged=store.stage(scan_files(tmp_path, "s1"), {}))
    assert not new and again.id == 1 and again.record == first.record  # stored once; the staged copy dropped
    assert not any((store.root / ".staging").iterdir())
    b = store.add(record("s1", 0.5, sha=SHA_B), source="predict")[0].id  # another model: a record of its own
    c = store.add(record("s2", 0.2), source="predict")[0].id
    assert store.count() == 3 and 1 < b < c  # ids grow (a refused duplicate may use one up)
    assert [s.name for s in store.query()] == ["s2", "s1", "s1"]  # newest first
    assert [s.id for s in store.query(oldest_first=True, limit=2)] == [1, b]
    assert [s.id for s in store.query(since=early + dt.timedelta(days=1))] == [c, b]
    assert [s.id for s in store.query(until=early + dt.timedelta(days=1))] == [1]
    assert [s.id for s in store.query(decision="anomalous")] == [1]
    assert [s.id for s in store.query(model=SHA_B[:8])] == [b]
    set_label(store, 1, "good", "ann")
    assert [s.id for s in store.query(label="good")] == [1] and [s.id for s in store.query(label="none")] == [c, b]
    assert [s.id for s in store.iterate(page=1)] == [1, b, c]
    with pytest.raises(ConfigError, match="--model-sha 'xyz'"):
        store.query(model="xyz")
    store.close()
    reopened = open_store(*target, log=lambda _: None)  # a restart: everything is still there
    assert reopened.count() == 3 and reopened.get(1).label == "good" and reopened.get(1).created_at == early


def test_labels_keep_their_history_and_undo_walks_back(target) -> None:
    store = open_store(*target, log=lambda _: None)
    rid = store.add(record("s1", 2.0), source="serve")[0].id
    assert review(store, rid).label is None
    set_label(store, rid, "good", "ann")  # a false alarm
    after = set_label(store, rid, "defect", "bob", "scratch")
    assert (after.label, after.defect_type, after.by) == ("defect", "scratch", "bob")
    back = undo_label(store, rid, "bob")
    assert (back.label, back.by) == ("good", "ann")  # the earlier label is in force again
    gone = undo_label(store, rid, "carol")
    assert gone.label is None and store.get(rid).label is None
    assert [(e["action"], e["label"], e["by"]) for e in gone.history] == [
        ("set", "good", "ann"), ("set", "defect", "bob"), ("undo", None, "bob"), ("undo", None, "carol")]
    assert gone.history[2]["undoes"] == gone.history[1]["event"]
    with pytest.raises(NothingToUndo, match=f"result {rid} has no label to undo"):
        undo_label(store, rid, "carol")
    with pytest.raises(NoSuchRecord, match="no result 999"):
        set_label(store, 999, "good", "ann")
    for bad, words in [(("bad", "ann", None), "label 'bad'"), (("defect", "ann", None), "defect type None"),
                       (("defect", "ann", "../x"), "defect type '../x'"), (("good", " ", None), "name ''"),
                       (("good", "ann", "scratch"), "with the label 'defect' only")]:
        with pytest.raises(ConfigError, match=words):
            set_label(store, rid, bad[0], bad[1], bad[2])


def test_retention_bounds_unlabelled_records_says_so_and_removes_their_files(target, tmp_path) -> None:
    lines: list[str] = []
    store = open_store(*target, retention=Retention(count=2), log=lines.append)
    old = dt.datetime.now(UTC) - dt.timedelta(days=10)
    ids = [store.add(record(f"s{i}", 2.0), source="serve", kind="xyz_tiff", created_at=old,
                     staged=store.stage(scan_files(tmp_path, f"s{i}"), {}))[0] for i in range(5)]
    set_label(store, ids[0].id, "defect", "ann", "dent")  # labelled: never removed by retention
    assert store.prune() == 2 and lines[-1].startswith("store: retention (newest 2 unlabelled) removed 2 record(s)")
    assert [s.id for s in store.query(oldest_first=True)] == [ids[0].id, ids[3].id, ids[4].id]
    assert not (store.root / ids[1].files).exists() and (store.root / ids[3].files).is_dir()
    aged = open_store(*target, retention=parse_retention("7d"), log=lines.append)  # opening applies it
    assert [s.id for s in aged.query()] == [ids[0].id] and "removed 2 record(s)" in lines[-1]
    with aged.transaction(write=False) as conn:
        runs = conn.execute(sa.text("SELECT deleted, policy FROM retention ORDER BY id")).all()
    assert [tuple(r) for r in runs] == [(2, "newest 2 unlabelled"), (2, "unlabelled of the last 7 days")]
    assert parse_retention("10000,90d") == Retention(10000, 90.0) and parse_retention("none") == Retention()
    for bad in ("0", "ten", "5,6", ""):
        with pytest.raises(ConfigError, match="--retain"):
            parse_retention(bad)


def test_staging_left_by_a_killed_writer_is_removed_and_a_placed_folder_reused(tmp_path) -> None:
    store = open_store(str(tmp_path / "results.db"), log=lambda _: None)
    stale, fresh = store.stage({}, {"a.png": b"1"}), store.stage({}, {"a.png": b"2"})
    os.utime(stale, (time.time() - 7200, time.time() - 7200))  # a writer killed two hours ago
    store.close()
    store = open_store(str(tmp_path / "results.db"), log=lambda _: None)
    assert not stale.exists() and fresh.exists()  # a live writer's staging is left alone
    orphan = store.root / record_folder(SHA_A, "key-s1")  # placed, then the writer died before its commit
    orphan.mkdir(parents=True)
    (orphan / "heatmap-fused.png").write_bytes(b"complete")
    stored, new = store.add(record("s1", 2.0), source="serve", staged=fresh)
    assert new and store.folder(stored) == orphan and not fresh.exists()


def test_a_newer_schema_or_a_foreign_database_is_refused(target) -> None:
    store = open_store(*target, log=lambda _: None)
    with store.transaction() as conn:
        conn.execute(sa.text("UPDATE trd_meta SET value = '99' WHERE key = 'schema_version'"))
    store.close()
    with pytest.raises(SchemaTooNew, match="schema version 99, but this trd reads versions up to 1: upgrade trd"):
        open_store(*target, log=lambda _: None)


def test_a_database_that_is_not_a_store_and_bad_urls_are_refused(tmp_path) -> None:
    path = tmp_path / "other.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE records (x INTEGER)")
    with pytest.raises(ConfigError, match="not a trd result store"):
        open_store(str(path))
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        open_store("mysql://u@h/db")
    with pytest.raises(ConfigError, match="give --store-files FOLDER"):
        open_store("postgresql://u@127.0.0.1/db")
    store = open_store(str(tmp_path), log=lambda _: None)  # a folder: results.db in it
    assert store.where == str(tmp_path / "results.db")
    with pytest.raises(TRDError, match="NaN and infinite values are refused"):
        store.add(record("n", 1.0) | {"branch_shares": {"rgb": float("nan")}}, source="serve")
    assert store.count() == 0


def test_tables_datasets_and_older_ledgers(target, tmp_path) -> None:
    store = open_store(*target, log=lambda _: None)
    ids = [store.add(record(name, score), source="serve", kind="xyz_tiff",
                     staged=store.stage(scan_files(tmp_path, name), {}))[0].id
           for name, score in [("s1", 2.0), ("s2", 0.3), ("s3", 1.5)]]
    set_label(store, ids[0], "defect", "ann", "scratch")
    set_label(store, ids[2], "good", "ann")
    n = export_table(store, tmp_path / "all.csv")
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))
    assert n == 3 and [r["name"] for r in rows] == ["s1", "s2", "s3"] and rows[0]["label"] == "defect"
    assert json.loads(rows[1]["record"])["score"] == 0.3 and rows[0]["time"].endswith("Z")
    pq = pytest.importorskip("pyarrow.parquet")
    assert export_table(store, tmp_path / "flagged.parquet", decision="anomalous") == 2
    table = pq.read_table(tmp_path / "flagged.parquet").to_pydict()
    assert table["name"] == ["s1", "s3"] and table["score"] == [2.0, 1.5]
    counts = export_defects(store, tmp_path / "ds", with_good=True, log=lambda _: None)
    assert counts == {"scratch": 1, "good": 1}
    assert (tmp_path / f"ds/test/scratch/rgb/{ids[0]}_s1.png").read_bytes() == b"png s1"
    assert (tmp_path / f"ds/test/scratch/xyz/{ids[0]}_s1.tiff").read_bytes() == b"tiff s1"
    assert (tmp_path / f"ds/test/good/xyz/{ids[2]}_s3.tiff").is_file() and (tmp_path / "ds/labels.csv").is_file()
    with pytest.raises(Exception, match="not empty"):
        export_defects(store, tmp_path / "ds")
    ledger = tmp_path / "preds" / "predictions.jsonl"
    ledger.parent.mkdir()
    scan = scan_files(tmp_path, "old")
    old = {"name": "old", "rgb": str(scan["rgb.png"]), "xyz": str(scan["3d.tiff"]), "score": 0.1,
           "anomalous": False, "heatmap": "heatmaps/old.png", "mask": "masks/old.png"}  # a line of an older trd
    gone = old | {"name": "gone", "rgb": "/nowhere/gone.png", "xyz": "/nowhere/gone.tiff"}
    ledger.write_text(json.dumps(old) + "\n" + json.dumps(gone) + "\n{torn")
    (ledger.parent / "predict.json").write_text(json.dumps({"sha256": SHA_B}))
    counts = import_ledger(store, ledger, log=lambda _: None)
    assert counts == {"imported": 2, "already": 0, "unreadable": 1}
    assert import_ledger(store, ledger, log=lambda _: None)["already"] == 2  # importing again adds nothing
    imported = store.query(source="import", oldest_first=True)
    assert [s.model_sha256 for s in imported] == [SHA_B, SHA_B] and imported[1].files is None
    assert imported[1].key.startswith("paths:") and (store.root / imported[0].files / "3d.tiff").is_file()
