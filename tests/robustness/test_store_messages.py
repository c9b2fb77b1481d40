"""The result store's settings and states a user can get wrong, through the `trd` command: one line,
the right exit code, nothing written (recorded for docs/ERRORS.md). And `trd store` used as a line
engineer does: list, label, undo, export, prune."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import sqlalchemy as sa

from trd.store import open_store

RECORD = {"schema": "trd.record/1", "name": "s1", "key": "k1", "rgb": "s1.png", "xyz": "s1.tiff", "score": 2.0,
          "anomalous": True, "threshold": {"image": 1.0}, "model": {"sha256": "c" * 64}}


def test_store_commands_and_their_one_line_errors(tmp_path: Path, tools, messages) -> None:
    db = tmp_path / "results.db"
    store = open_store(str(db), log=lambda _: None)
    rid = store.add(RECORD, source="serve")[0].id
    store.add(RECORD | {"name": "s2", "key": "k2", "score": 0.1, "anomalous": False}, source="predict")
    run = tools.run_cli_inprocess
    listed = run("store", "list", "--store", str(db), "--decision", "anomalous")
    assert listed.code == 0 and [json.loads(x)["id"] for x in listed.stdout.splitlines()] == [rid]
    labelled = run("store", "label", "--store", str(db), str(rid), "--good", "--by", "ann")
    assert labelled.code == 0 and json.loads(labelled.stdout)["label"] == "good"
    assert run("store", "list", "--store", str(db), "--label", "good").stdout.count('"id"') == 1
    assert json.loads(run("store", "undo", "--store", str(db), str(rid), "--by", "ann").stdout)["label"] is None
    exported = run("store", "export", "--store", str(db), "--out", str(tmp_path / "all.csv"))
    assert exported.code == 0 and len(list(csv.DictReader((tmp_path / "all.csv").open()))) == 2
    pruned = run("store", "prune", "--store", str(db), "--retain", "1")
    assert pruned.stdout.strip() == "removed 1 result(s)" and "retention (newest 1 unlabelled) removed 1" in pruned.stderr

    cases = {
        "store --retain with a bad value": ("store", "prune", "--store", str(db), "--retain", "a week"),
        "store label with both --good and --defect": ("store", "label", "--store", str(db), str(rid), "--good",
                                                      "--defect", "dent", "--by", "ann"),
        "store label with a defect type that is no folder name": ("store", "label", "--store", str(db), str(rid),
                                                                  "--defect", "../x", "--by", "ann"),
        "store label of a result that is not there": ("store", "label", "--store", str(db), "999", "--good", "--by",
                                                      "ann"),
        "store undo with nothing to undo": ("store", "undo", "--store", str(db), str(rid), "--by", "ann"),
        "store export to an unknown table format": ("store", "export", "--store", str(db), "--out",
                                                    str(tmp_path / "x.xlsx")),
        "store --since that is not a time": ("store", "list", "--store", str(db), "--since", "yesterday"),
        "store URL of an unsupported database": ("store", "list", "--store", "mysql://u@h/db"),
        "PostgreSQL store without --store-files": ("store", "list", "--store", "postgresql://u@127.0.0.1/trd"),
    }
    for case, args in cases.items():
        result = run(*args)
        assert result.code == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result
        messages.record("setting", case, result.stderr.strip())

    with store.transaction() as conn:  # a store written by a newer trd
        conn.execute(sa.text("UPDATE trd_meta SET value = '2' WHERE key = 'schema_version'"))
    newer = run("store", "list", "--store", str(db))
    assert newer.code == 2 and "schema version 2, but this trd reads versions up to 1" in newer.stderr
    messages.record("setting", "a result store of a newer trd", newer.stderr.strip())
    foreign = tmp_path / "other.db"
    engine = sa.create_engine(f"sqlite:///{foreign}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE records (x INTEGER)")
    other = run("store", "list", "--store", str(foreign))
    assert other.code == 2 and "not a trd result store" in other.stderr
    messages.record("setting", "a database that is not a trd result store", other.stderr.strip())
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    unwritable = run("store", "list", "--store", str(locked / "sub" / "results.db"))
    if unwritable.code == 3:  # root may write anywhere: then there is nothing to see
        messages.record("output", "a result store in a folder that cannot be written", unwritable.stderr.strip())


def test_watch_settings_are_checked_before_the_model_loads(tmp_path: Path, tools, messages) -> None:
    run = tools.run_cli_inprocess
    (tmp_path / "in").mkdir()
    both = run("predict", "--onnx", str(tmp_path / "none.onnx"), "--watch", str(tmp_path / "in"), "--input",
               str(tmp_path / "in"), "--out", str(tmp_path / "p"))
    assert both.code == 2 and "--watch DIR scores what appears in DIR" in both.stderr
    missing = run("predict", "--onnx", str(tmp_path / "none.onnx"), "--watch", str(tmp_path / "nowhere"), "--out",
                  str(tmp_path / "p"))
    assert missing.code == 2 and "nowhere: folder not found (the watched folder must exist" in missing.stderr
    serve_none = run("serve", "--model", str(tmp_path / "none.onnx"), "--store", "none")
    assert serve_none.code == 2 and "trd serve keeps every result in a store" in serve_none.stderr
    for case, result in (("predict --watch with --input", both), ("predict --watch of a folder that is not there",
                                                                   missing), ("serve --store none", serve_none)):
        messages.record("setting", case, result.stderr.strip())
    assert not (tmp_path / "p").exists()
