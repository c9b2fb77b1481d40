"""The result store against real processes: a `trd serve` and a `trd predict` writing one SQLite store
at once; SIGKILL of the server while requests are in flight loses no acknowledged record, on SQLite
and on a real PostgreSQL server; labels over HTTP with their history."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from trd.data.identity import content_key
from trd.store import open_store


def distinct_pairs(base: tuple[Path, Path], folder: Path, n: int, offset: int = 0) -> list[tuple[Path, Path]]:
    """``n`` scans that differ (pixel (0, 0) of the RGB image), as ``folder/{rgb,xyz}/NNNN``."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    image, cloud = Image.open(base[0]).convert("RGB"), base[1].read_bytes()
    pairs = []
    for i in range(n):
        image.putpixel((0, 0), ((offset + i) % 256, (offset + i) // 256, 9))
        rgb, xyz = folder / "rgb" / f"{i:04d}.png", folder / "xyz" / f"{i:04d}.tiff"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rgb.write_bytes(buffer.getvalue())
        xyz.write_bytes(cloud)
        pairs.append((rgb, xyz))
    return pairs


def _post(url: str, pair: tuple[Path, Path]) -> httpx.Response:
    files = {"rgb": (pair[0].name, pair[0].read_bytes()), "xyz": (pair[1].name, pair[1].read_bytes())}
    return httpx.post(f"{url}/v1/score", files=files, timeout=120)


def test_serve_and_predict_write_one_sqlite_store_at_once(start_server, served, tmp_path: Path) -> None:
    db = str(tmp_path / "results.db")
    server = start_server("--store", db)
    served_pairs = distinct_pairs(served.pair(0), tmp_path / "a", 12)
    predicted = tmp_path / "b"
    distinct_pairs(served.pair(0), predicted, 12, offset=100)
    predict = subprocess.Popen([sys.executable, "-m", "trd.cli", "predict", "--onnx", str(server.onnx), "--input",
                                str(predicted), "--out", str(tmp_path / "p"), "--store", db, "--batch-size", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answers = [_post(server.url, pair) for pair in served_pairs]  # while predict writes
    out, err = predict.communicate(timeout=300)
    assert predict.returncode == 0, err
    assert [a.status_code for a in answers] == [200] * 12
    store = open_store(db)
    stored = {s.key: s for s in store.query(limit=None)}
    assert len(stored) == 24 and json.loads(out)["scored"] == 12
    for answer, (rgb, xyz) in zip(answers, served_pairs, strict=True):
        record = answer.json()
        assert stored[record["key"]].id == record["id"] and record["key"] == content_key(rgb, xyz)
        assert stored[record["key"]].source == "serve"
    assert sum(s.source == "predict" for s in stored.values()) == 12


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_killed_server_loses_no_acknowledged_record(backend: str, start_server, served, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    target = str(tmp_path / "results.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    files = [] if backend == "sqlite" else ["--store-files", str(tmp_path / "files")]
    uploads = tmp_path / "tmp"  # the server's temp folder: where its uploads wait
    uploads.mkdir()
    server = start_server("--store", target, *files, "--max-batch", "4", env={"TMPDIR": str(uploads)})
    pairs = distinct_pairs(served.pair(0), tmp_path / "scans", 40)
    acknowledged: list[dict] = []
    lock = threading.Lock()

    def client(mine: list[tuple[Path, Path]]) -> None:
        for pair in mine:
            try:
                answer = _post(server.url, pair)
            except httpx.HTTPError:
                return  # the server is gone
            if answer.status_code == 200:
                with lock:
                    acknowledged.append(answer.json())

    clients = [threading.Thread(target=client, args=(pairs[i::4],)) for i in range(4)]
    for thread in clients:
        thread.start()
    while len(acknowledged) < 8 and any(t.is_alive() for t in clients):
        threading.Event().wait(0.05)
    os.kill(server.process.pid, signal.SIGKILL)  # requests in flight, a batch maybe half stored
    for thread in clients:
        thread.join(timeout=120)
    server.process.wait(timeout=30)
    assert 8 <= len(acknowledged) < 40
    store = open_store(target, None if backend == "sqlite" else str(tmp_path / "files"))
    for record in acknowledged:  # every answered record is there, with its files
        stored = store.get(record["id"])
        assert stored is not None and stored.key == record["key"] and stored.score == record["score"]
        assert (store.folder(stored) / "heatmap-fused.png").is_file()
    if backend == "sqlite":
        with store.transaction(write=False) as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        # The killed server's uploads stay in the temp folder until the next server starts there.
        left = [p.name for p in uploads.glob("trd-serve-*")]
        assert len(left) == 1, left
        again = start_server("--store", target, env={"TMPDIR": str(uploads)})
        assert [p.name for p in uploads.glob("trd-serve-*")] != left
        again.process.send_signal(signal.SIGTERM)
        assert again.stop() == 0
        assert not list(uploads.glob("trd-serve-*"))  # and a server that stops removes its own


def test_labels_over_http_keep_history_and_undo(served) -> None:
    http = httpx.Client(timeout=60)
    record = served.score(3).json()
    url = f"{served.url}/v1/results/{record['id']}/labels"
    first = http.post(url, json={"label": "good", "by": "ann"}).json()
    assert (first["label"], first["by"]) == ("good", "ann") and first["at"].endswith("Z")
    second = http.post(url, json={"label": "defect", "defect_type": "scratch", "by": "bob"}).json()
    assert (second["label"], second["defect_type"]) == ("defect", "scratch")
    assert http.post(url + "/undo", json={"by": "bob"}).json()["label"] == "good"
    history = http.get(url).json()["history"]
    assert [(e["action"], e["by"]) for e in history] == [("set", "ann"), ("set", "bob"), ("undo", "bob")]
    listed = http.get(f"{served.url}/v1/results", params={"label": "good"}).json()["results"]
    assert record["id"] in [r["id"] for r in listed]
    assert http.get(f"{served.url}/v1/results/{record['id']}").json()["review"]["label"] == "good"
    bad = http.post(url, json={"label": "defect", "by": "ann"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("defect type None")
    assert http.post(f"{served.url}/v1/results/99999/labels", json={"label": "good", "by": "a"}).status_code == 404
    http.post(url + "/undo", json={"by": "bob"})
    again = http.post(url + "/undo", json={"by": "bob"})
    assert again.status_code == 409 and "no label to undo" in again.json()["error"]
    assert http.post(url, content=b"not json").status_code == 422
