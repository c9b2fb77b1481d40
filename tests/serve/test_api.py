"""The endpoints of a real `trd serve` process (the shared ``served`` server): answers equal predict's."""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from PIL import Image

from trd import api
from trd.runtime.ort import open_onnx
from trd.scoring.threshold import bound_90

from ..cloud_writers import write_pcd, write_ply

NO_PAIR = {"rgb", "xyz", "heatmap", "mask", "outline", "timings_ms", "id"}  # keys whose values differ by design
#: Keys computed from the score (equal to ~1e-5 between a batch of one and a micro-batch).
FROM_SCORE = {"score", "branch_shares", "anomalous", "score_above_threshold", "decided_by", "regions", "heatmap_range"}


def _predict_line(served, i: int, out: Path) -> dict:
    rgb, xyz = served.pair(i)
    summary = api.predict(None, out, rgb=rgb, xyz=xyz, onnx_path=served.onnx, log=lambda _: None)
    assert summary["scored"] == 1
    return json.loads((out / "predictions.jsonl").read_text().splitlines()[0])


def _png(data_url: str) -> np.ndarray:
    head, body = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body))))


def test_health_readiness_and_model(served) -> None:
    assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    info = httpx.get(f"{served.url}/v1/model").json()
    engine = open_onnx(served.onnx)
    assert info["schema"] == "trd.model/1" and info["engine"] == "onnxruntime"
    assert info["branches"] == ["rgb", "geo"] and info["image_size"] == 64
    assert info["input_3d"] == {"modality": "normals", "format": "mvtec3d", "files": [".pcd", ".ply", ".tif", ".tiff"],
                                "kinds": ["XYZ TIFF", "organised PCD point cloud", "ordered PLY point cloud"],
                                "camera": "none"}  # from the reader registry
    assert info["input_rgb"] == {"files": [".png", ".jpg", ".jpeg", ".bmp"]}
    assert info["thresholds"] == json.loads(json.dumps(engine.thresholds.to_dict()))
    assert info["thresholds"]["statements"][0].startswith("image threshold ")
    assert info["thresholds"]["source"] == "puck (validation split)"  # not the training machine's path
    assert info["validation_scores"] == pytest.approx(engine.validation_scores) and len(info["validation_scores"]) == 2


@pytest.mark.parametrize("i", [0, 5])  # a good and a defective pair
def test_a_score_is_predicts_record(served, i: int, tmp_path: Path) -> None:
    answer = served.score(i)
    assert answer.status_code == 200, answer.text
    record, line = answer.json(), _predict_line(served, i, tmp_path / "p")
    assert set(record) - {"id"} == set(line) - {"heatmap", "mask", "outline"}  # one schema
    assert record["schema"] == line["schema"] == "trd.record/2"
    assert record["score"] == pytest.approx(line["score"], rel=1e-5, abs=1e-5)
    assert record["anomalous"] == (record["score"] > record["threshold"]["image"])
    assert {k: v for k, v in record.items() if k not in NO_PAIR | FROM_SCORE} == \
        {k: v for k, v in line.items() if k not in NO_PAIR | FROM_SCORE}
    assert record["branch_shares"] == pytest.approx(line["branch_shares"], rel=1e-5, abs=1e-5)
    # the same regions, measured by the same code
    assert [(r["pixels"], r["box"]) for r in record["regions"]] == [(r["pixels"], r["box"]) for r in line["regions"]]
    assert [r["area_mm2"] for r in record["regions"]] == pytest.approx([r["area_mm2"] for r in line["regions"]])
    rgb, xyz = served.pair(i)
    assert (record["rgb"], record["xyz"], record["name"]) == (rgb.name, xyz.name, rgb.stem)  # names, not paths
    assert set(record["timings_ms"]) == {"read", "queue", "score", "regions", "total"}
    assert record["timings_ms"]["total"] >= record["timings_ms"]["read"] + record["timings_ms"]["score"]


def test_heatmaps_on_request_and_recent_results(served, tmp_path: Path) -> None:
    answer = served.score(2, heatmaps=True).json()
    assert set(answer["heatmaps"]) == {"fused", "rgb", "geo"} and set(answer["images"]) == {"rgb", "3d"}
    for url in (*answer["heatmaps"].values(), *answer["images"].values()):
        assert _png(url).shape == (64, 64, 3)
    assert answer["heatmap_range"]["vmin"] == 0.0 and answer["heatmap_range"]["vmax"] >= max(1.0, answer["score"])
    line = _predict_line(served, 2, tmp_path / "p")  # predict draws the same fused overlay
    np.testing.assert_array_equal(_png(answer["heatmaps"]["fused"]),
                                  np.asarray(Image.open(tmp_path / "p" / line["heatmap"])))
    recent = httpx.get(f"{served.url}/v1/recent").json()["results"]
    assert recent[0] == {k: answer[k] for k in ("id", "name", "score", "anomalous")} | {
        "time": recent[0]["time"], "label": None, "defect_type": None}
    again = httpx.get(f"{served.url}/v1/recent/{answer['id']}").json()  # from the store: its images too
    assert again == answer | {"review": {"label": None, "defect_type": None, "by": None, "at": None, "history": []}}
    missing = httpx.get(f"{served.url}/v1/recent/0000")
    assert missing.status_code == 404 and missing.json()["error"] == "no result 0 in the store"


def test_a_typed_threshold_becomes_a_new_model_file(served) -> None:
    """POST /v1/threshold writes a NEW ONNX file (in --models-dir) that onnxruntime runs: the same
    model with the typed image threshold and its recomputed promise; the served model is unchanged."""
    model = httpx.get(f"{served.url}/v1/model").json()
    scores = sorted(model["validation_scores"])
    assert model["fpr_bound_90_by_rank"] == pytest.approx([bound_90(k, len(scores)) for k in range(1, len(scores) + 1)])
    value = (scores[0] + scores[-1]) / 2  # between the two validation scores: one above it, k = 2
    answer = httpx.post(f"{served.url}/v1/threshold", json={"image": value}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    path = served.models_dir / body["file"]
    assert body["folder"] == str(served.models_dir) and body["served"] == served.onnx.name
    assert body["file"].startswith(f"{served.onnx.stem}.threshold-") and path.suffix == ".onnx"
    new, old = open_onnx(path), open_onnx(served.onnx)
    assert new.thresholds.image == value and new.thresholds.rank == 1 + sum(s > value for s in scores)
    assert body["thresholds"] == json.loads(json.dumps(new.thresholds.to_dict()))
    assert new.thresholds.pixel == old.thresholds.pixel and new.thresholds.pixel_rank == old.thresholds.rank
    assert new.validation_scores == old.validation_scores and new.config == old.config
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32), rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    for key, value_old in old(*x).items():  # the same network, bit for bit
        np.testing.assert_array_equal(new(*x)[key], value_old)
    assert httpx.get(f"{served.url}/v1/model").json()["thresholds"] == model["thresholds"]
    # values that promise nothing or are not numbers: 422 with one line, nothing written
    files = sorted(served.models_dir.iterdir())
    low = httpx.post(f"{served.url}/v1/threshold", json={"image": scores[0] - 1})
    assert low.status_code == 422 and "below the lowest validation score" in low.json()["error"]
    for bad in ({"image": "high"}, {}, [1.0]):
        refused = httpx.post(f"{served.url}/v1/threshold", json=bad)
        assert refused.status_code == 422 and "\n" not in refused.json()["error"], bad
    assert sorted(served.models_dir.iterdir()) == files


def _cli_message(rgb: Path, xyz: Path, served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `trd predict --rgb NAME --xyz NAME` says about this pair, run in the files' folder."""
    monkeypatch.chdir(rgb.parent)
    try:
        summary = api.predict(None, tmp_path / "cli", rgb=Path(rgb.name), xyz=Path(xyz.name), onnx_path=served.onnx,
                              log=lambda _: None)
    except Exception as exc:  # noqa: BLE001 - a refused pair: the CLI prints this line
        return str(exc)
    assert summary["scored"] == 0
    return summary["failed"][0]["error"]


def _post(served, files: dict[str, tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/score", files=files, headers=served.headers(), timeout=60)


@pytest.mark.parametrize("form", ["pcd binary_compressed", "ply ascii, no grid in the file"])
def test_point_cloud_files_are_scored_like_the_tiff(served, form: str, tmp_path: Path) -> None:
    # the pixel budget reads each 3D file's declared size from its own header (PIL cannot open these)
    rgb, xyz = served.pair(5)
    cloud = tifffile.imread(xyz).astype(np.float32)
    if form.startswith("pcd"):
        name = write_pcd(tmp_path / "scan.pcd", cloud, "binary_compressed").name
    else:
        name = write_ply(tmp_path / "scan.ply", cloud, "ascii").name  # the grid comes from the RGB image
    answer = _post(served, {"rgb": (rgb.name, rgb.read_bytes()), "xyz": (name, (tmp_path / name).read_bytes())})
    assert answer.status_code == 200, answer.text
    assert answer.json()["score"] == served.score(5).json()["score"]


def test_bad_inputs_get_422_with_the_clis_message(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb, xyz = served.pair(0)
    folder = tmp_path / "in"
    folder.mkdir()
    cases = {
        "garbage PNG": ("scan.png", b"not a png at all", "scan.tiff", xyz.read_bytes()),
        "wrong-size cloud": ("scan.png", rgb.read_bytes(), "scan.tiff", None),
        "3D file of another kind": ("scan.png", rgb.read_bytes(), "scan.png3d.png", rgb.read_bytes()),
        "truncated TIFF": ("scan.png", rgb.read_bytes(), "scan.tiff", xyz.read_bytes()[:300]),
    }
    for case, (rgb_name, rgb_bytes, xyz_name, xyz_bytes) in cases.items():
        if xyz_bytes is None:
            tifffile.imwrite(folder / xyz_name, np.ones((32, 48, 3), np.float32), photometric="rgb")
            xyz_bytes = (folder / xyz_name).read_bytes()
        (folder / rgb_name).write_bytes(rgb_bytes)
        (folder / xyz_name).write_bytes(xyz_bytes)
        answer = _post(served, {"rgb": (rgb_name, rgb_bytes), "xyz": (xyz_name, xyz_bytes)})
        expected = _cli_message(folder / rgb_name, folder / xyz_name, served, tmp_path / case, monkeypatch)
        assert answer.status_code == 422, (case, answer.text)
        assert answer.json() == {"error": expected, "status": 422}, case
        assert str(tmp_path) not in answer.text and "/tmp" not in answer.text  # no server paths
        shutil.rmtree(folder)
        folder.mkdir()


def test_malformed_requests_get_one_line_errors(served) -> None:
    rgb, _ = served.pair(0)
    missing = _post(served, {"rgb": ("a.png", rgb.read_bytes())})
    assert missing.status_code == 422 and missing.json()["error"].startswith("missing file part 'xyz'")
    extra = _post(served, {"rgb": ("a.png", b"x"), "xyz": ("a.tiff", b"x"), "path": ("p", b"/etc/passwd")})
    assert extra.status_code == 422 and "unexpected part 'path'" in extra.json()["error"]
    not_multipart = httpx.post(f"{served.url}/v1/score", json={"rgb": "/etc/passwd"})
    assert not_multipart.status_code == 422 and "multipart/form-data" in not_multipart.json()["error"]
    unknown = httpx.get(f"{served.url}/v2/nothing")
    assert unknown.status_code == 404 and unknown.json() == {"error": "not found", "status": 404}
    # a client's file name is reduced to a plain name: it cannot point the service anywhere
    traversal = _post(served, {"rgb": ("../../../etc/passwd.png", b"junk"), "xyz": ("x.tiff", b"junk")})
    assert traversal.status_code == 422 and traversal.json()["error"].startswith("passwd.png: ")


def test_uploads_over_the_limit_get_413(served) -> None:
    big = b"\0" * (3 << 19)  # 1.5 MiB against the 1 MiB limit
    declared = _post(served, {"rgb": ("a.png", big), "xyz": ("a.tiff", b"x")})
    assert declared.status_code == 413 and "limit of 1 MiB" in declared.json()["error"]

    def chunks():  # no Content-Length: the limit is checked while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"rgb\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(24):
            yield b"\0" * (1 << 16)

    streamed = httpx.post(f"{served.url}/v1/score", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)
    assert streamed.status_code == 413 and "larger than the limit" in streamed.json()["error"]
    assert served.score(0).status_code == 200  # the service goes on


def test_metrics_count_requests_batches_and_queue(served) -> None:
    assert served.score(1).status_code == 200
    _post(served, {"rgb": ("a.png", b"junk"), "xyz": ("a.tiff", b"junk")})
    text = httpx.get(f"{served.url}/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['trd_requests_total{endpoint="/v1/score",code="200"}'] >= 1
    assert values['trd_requests_total{endpoint="/v1/score",code="422"}'] >= 1
    assert values['trd_request_duration_seconds_count{endpoint="/v1/score"}'] >= 2
    assert values["trd_batch_size_count"] >= 1 and values['trd_batch_size_bucket{le="+Inf"}'] >= 1
    assert values["trd_queue_depth"] == 0 and values["trd_requests_in_flight"] == 0
    assert "# TYPE trd_request_duration_seconds histogram" in text


def test_the_page_is_served_without_data(served) -> None:
    static = Path(__file__).resolve().parents[2] / "src" / "trd" / "serve" / "static"
    page = httpx.get(f"{served.url}/")
    assert page.status_code == 200 and page.content == (static / "index.html").read_bytes()
    for path in sorted(p for p in static.iterdir() if p.is_file()):
        assert httpx.get(f"{served.url}/static/{path.name}").content == path.read_bytes()
    assert httpx.get(f"{served.url}/static/../app.py").status_code == 404


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels (a decompression bomb's header)."""
    body = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(body)) + b"IHDR" + body + struct.pack(">I", zlib.crc32(b"IHDR" + body))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def _tiff(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, photometric="rgb" if arr.ndim == 3 and arr.shape[-1] == 3 else None)
    return buf.getvalue()


def test_no_bad_file_is_a_fault_of_the_service(served) -> None:
    rgb, xyz = (p.read_bytes() for p in served.pair(0))
    cloud = tifffile.imread(served.pair(0)[1])
    bad = {
        "empty RGB": (b"", xyz, "scan.png: "),
        "bomb header": (_png_header_only(100_000, 100_000), xyz, "scan.png: 100000x100000 = 10000 Mpx is over the limit"),
        "empty TIFF": (rgb, b"", "scan.tiff: "),
        "NaN cloud": (rgb, _tiff(np.full_like(cloud, np.nan)), "scan.tiff: "),
        "all points missing": (rgb, _tiff(np.zeros_like(cloud)), "scan.tiff: "),
        "cloud behind the camera": (rgb, _tiff(cloud * np.array([1, 1, -1], np.float32)), "scan.tiff: "),
        "one-channel cloud": (rgb, _tiff(cloud[..., 2]), "scan.tiff: "),
        "integer cloud": (rgb, _tiff((cloud * 1000).astype(np.int32)), "scan.tiff: "),
    }
    for case, (rgb_bytes, xyz_bytes, start) in bad.items():
        answer = _post(served, {"rgb": ("scan.png", rgb_bytes), "xyz": ("scan.tiff", xyz_bytes)})
        assert answer.status_code == 422, (case, answer.text)
        message = answer.json()["error"]
        assert message.startswith(start) and "\n" not in message and "/tmp" not in message, (case, message)
    assert httpx.get(f"{served.url}/healthz").status_code == 200
