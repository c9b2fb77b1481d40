"""The service's process: micro-batches, a full queue, SIGTERM with requests in flight, the token,
no torch on the ONNX path, a model.pt. Each test starts its own real server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image


def test_concurrent_requests_are_scored_together_each_with_its_own_row(served, start_server) -> None:
    alone = [served.score(i).json()["score"] for i in range(8)]
    server = start_server("--max-batch", "8", "--max-wait-ms", "1000")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(server.score, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert [a.json()["score"] for a in answers] == pytest.approx(alone, rel=1e-5, abs=1e-5)
    assert [a.json()["name"] for a in answers] == [served.pair(i)[0].stem for i in range(8)]
    assert server.metric("trd_batch_size_count") < 8  # fewer engine calls than requests
    assert max(a.json()["timings_ms"]["queue"] for a in answers) < 1500


def test_a_full_queue_answers_503_with_retry_after(start_server) -> None:
    server = start_server("--queue", "1", "--max-batch", "2", "--max-wait-ms", "1500")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(server.score, 0)  # waits up to 1.5 s for a second request to batch with
        server.wait_for("trd_queue_depth", 1)
        refused = server.score(1)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["error"].startswith("queue full (1 requests waiting)")
        assert first.result().status_code == 200
    assert server.score(1).status_code == 200  # room again


def test_sigterm_answers_every_request_in_flight_then_exits_0(start_server) -> None:
    server = start_server("--max-batch", "64", "--max-wait-ms", "20000")
    with ThreadPoolExecutor(5) as pool:
        pending = [pool.submit(server.score, i) for i in range(5)]
        server.wait_for("trd_queue_depth", 5)  # all five admitted, waiting for a batch to fill
        client = httpx.Client(base_url=server.url)
        assert client.get("/readyz").status_code == 200  # a connection kept open
        started = time.monotonic()
        server.process.send_signal(15)
        try:  # a request after SIGTERM is refused: 503 on an open connection, until the service closes it
            seen = client.get("/readyz").status_code
        except httpx.TransportError:
            seen = None
        client.close()
        assert seen in (503, None)
        answers = [p.result() for p in pending]
    assert [a.status_code for a in answers] == [200] * 5
    assert time.monotonic() - started < 10  # scored at once, not after the 20 s batch wait
    assert server.stop() == 0
    assert "SIGTERM received; answering the 5 request(s) in flight" in server.stderr
    with pytest.raises(httpx.ConnectError):  # no longer accepting
        httpx.get(f"{server.url}/healthz")


def test_a_fault_of_the_service_is_a_500_with_one_line_and_the_service_goes_on(start_server, tmp_path) -> None:
    uploads = tmp_path / "service-tmp"
    uploads.mkdir()
    server = start_server(env={"TMPDIR": str(uploads)})
    assert server.score(0).status_code == 200  # the service now keeps its uploads under TMPDIR
    shutil.rmtree(uploads)  # removed under the running service: a fault of the host, not of the request
    broken = server.score(1)
    assert broken.status_code == 500
    assert broken.json() == {"error": "internal error of the service (logged on the server)", "status": 500}
    assert "Traceback" not in broken.text and str(uploads) not in broken.text
    assert server.metric("trd_queue_depth") == 0 and server.metric("trd_requests_in_flight") == 0
    uploads.mkdir()
    assert server.score(1).status_code == 200  # its place in the queue was given back; the service goes on
    assert server.metric('trd_requests_total{endpoint="/v1/score",code="500"}') == 1
    assert server.stop() == 0
    assert "internal error answering POST /v1/score" in server.stderr and "FileNotFoundError" in server.stderr


def test_the_token_guards_everything_but_health_and_the_page(start_server) -> None:
    server = start_server("--host", "0.0.0.0", env={"TRD_TOKEN": "s3cret"}, token="s3cret")
    for path in ("/v1/model", "/v1/recent", "/v1/results", "/v1/results/1", "/v1/results/1/labels", "/metrics"):
        refused = httpx.get(f"{server.url.replace('0.0.0.0', '127.0.0.1')}{path}", timeout=60)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", path
        assert refused.json()["error"].startswith("missing or wrong token")
    server.url = server.url.replace("0.0.0.0", "127.0.0.1")
    before = sorted(server.onnx.parent.iterdir())
    unwritten = httpx.post(f"{server.url}/v1/threshold", json={"image": 1e9})  # a new model file needs the token
    assert unwritten.status_code == 401 and sorted(server.onnx.parent.iterdir()) == before
    wrong = httpx.get(f"{server.url}/v1/model", headers={"Authorization": "Bearer s3cre"})
    assert wrong.status_code == 401
    assert server.score(0).status_code == 200
    assert httpx.get(f"{server.url}/v1/model", headers=server.headers()).status_code == 200
    label = httpx.post(f"{server.url}/v1/results/1/labels", json={"label": "good", "by": "eve"}, timeout=60)
    assert label.status_code == 401  # labels need the token too
    assert httpx.post(f"{server.url}/v1/results/1/labels", json={"label": "good", "by": "ann"},
                      headers=server.headers(), timeout=60).status_code == 200
    unsent = server.token
    server.token = None
    assert server.score(0).status_code == 401
    server.token = unsent
    for path in ("/healthz", "/readyz"):
        assert httpx.get(f"{server.url}{path}").status_code == 200
    assert httpx.get(f"{server.url}/").status_code != 401  # the page (no data) needs no token


def test_no_token_off_loopback_is_refused_in_one_line(trd_serve) -> None:
    process = trd_serve("--host", "0.0.0.0", "--port", "0", env={"TRD_TOKEN": ""})
    out, err = process.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if not ln.startswith("TORCH_MODULES")]
    assert process.returncode == 2 and out == ""
    assert lines == ["error: --host 0.0.0.0 is reachable from other machines: give a token (--token or the "
                     "TRD_TOKEN environment variable), or keep the default --host 127.0.0.1"]


def test_serving_an_export_never_imports_torch(start_server, served, block_torch) -> None:
    server = start_server(prelude=block_torch)
    answer = server.score(3, heatmaps=True)
    assert answer.status_code == 200 and answer.json()["score"] == pytest.approx(served.score(3).json()["score"])
    assert server.stop() == 0
    assert "TORCH_MODULES []" in server.stderr, server.stderr


def test_a_model_pt_is_served_with_torch(start_server, served, exported, tmp_path) -> None:
    server = start_server("--engine", "torch", "--models-dir", str(tmp_path), model=exported[0])
    answer = server.score(4).json()
    assert answer["model"]["engine"] == "torch"
    assert answer["score"] == pytest.approx(served.score(4).json()["score"], rel=1e-4, abs=1e-4)
    info = httpx.get(f"{server.url}/v1/model").json()
    assert info["validation_scores"] == pytest.approx(httpx.get(f"{served.url}/v1/model").json()["validation_scores"])
    # model.pt holds the training machine's dataset path; the answer does not (issue 23.12)
    assert info["thresholds"]["source"] == "puck (validation split)"
    assert str(exported[0].parents[2]) not in httpx.get(f"{server.url}/v1/model").text
    scores = sorted(info["validation_scores"])  # nor does the answer of a typed threshold (a new model.pt)
    written = httpx.post(f"{server.url}/v1/threshold", json={"image": (scores[0] + scores[-1]) / 2}, timeout=60)
    assert written.status_code == 200
    assert written.json()["thresholds"]["source"].startswith("puck (validation split); image threshold ")
    assert str(exported[0].parents[2]) not in json.dumps(written.json()["thresholds"])  # "folder": where it went


def test_a_model_pt_without_torch_names_the_extra(trd_serve, exported, block_torch, tmp_path) -> None:
    fresh = tmp_path / "never-scored" / "model.pt"  # no export cached anywhere: serving it needs torch
    fresh.parent.mkdir()
    shutil.copyfile(exported[0], fresh)
    env = {**os.environ, "TRD_CACHE": str(tmp_path / "cache" / "preprocess")}
    process = trd_serve("--port", "0", prelude=block_torch, model=fresh, env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.splitlines()[0] == ("error: this command needs the training install (PyTorch), which is not "
                                   "installed here: pip install 'trd-anomaly[train]'")


def test_the_cli_lists_serve() -> None:
    help_text = subprocess.run([sys.executable, "-m", "trd.cli", "serve", "--help"], capture_output=True, text=True,
                               check=True).stdout
    for option in ("--model", "--host", "--port", "--token", "--max-batch", "--max-wait-ms", "--queue",
                   "--max-upload-mb", "--models-dir", "--threads", "--engine"):
        assert option in help_text


def test_image_size_limit_and_the_recent_list(start_server, tmp_path) -> None:
    server = start_server("--max-pixels", "4096", "--recent", "2")  # the pairs are 64 x 64 = 4096 px
    ids = [server.score(i).json()["id"] for i in range(3)]
    assert [r["id"] for r in httpx.get(f"{server.url}/v1/recent").json()["results"]] == ids[:0:-1]
    assert httpx.get(f"{server.url}/v1/recent/{ids[0]}").json()["id"] == ids[0]  # not listed, still stored
    big = tmp_path / "big.png"
    Image.new("RGB", (80, 64)).save(big)
    _, xyz = server.pair(0)
    answer = httpx.post(f"{server.url}/v1/score", files={"rgb": ("big.png", big.read_bytes()),
                                                          "xyz": (xyz.name, xyz.read_bytes())}, timeout=60)
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("big.png: 80x64 = 5120 px is over the limit of 4096 px")
