"""The record schema trd.record/1 as `trd predict` writes it; lines of older predictions still resume."""

from __future__ import annotations

import json
from pathlib import Path

from trd import api
from trd.runtime.ort import open_onnx
from trd.runtime.records import SCHEMA
from trd.data.identity import files_sha256

KEYS = {"schema", "name", "rgb", "xyz", "score", "anomalous", "image_threshold", "threshold", "branch_shares",
        "timings_ms", "model", "heatmap", "mask"}


def test_predict_writes_the_versioned_record(exported, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "dent"
    api.predict(None, tmp_path / "p", input_dir=inputs, onnx_path=exported[1], log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    thresholds = open_onnx(exported[1]).thresholds
    for line in lines:
        assert set(line) == KEYS and line["schema"] == SCHEMA
        assert line["threshold"] == {"image": thresholds.image, "pixel": thresholds.pixel,
                                     "target_fpr": thresholds.target_fpr, "guaranteed_fpr": thresholds.guaranteed_fpr,
                                     "validation_samples": 2, "statement": thresholds.image_statement()}
        assert line["image_threshold"] == thresholds.image and line["anomalous"] == (line["score"] > thresholds.image)
        assert line["model"] == {"sha256": files_sha256(exported[1]), "engine": "onnxruntime",
                                 "provider": "CPUExecutionProvider", "precision": "fp32", "trd_version": "0.1.0"}
        timings = line["timings_ms"]
        assert set(timings) == {"read", "score", "total"} and timings["total"] >= timings["read"] + timings["score"] > 0
    assert [line["name"] for line in lines] == ["000", "001"]


def test_older_lines_without_the_schema_still_resume(exported, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "good"
    out = tmp_path / "p"
    api.predict(None, out, input_dir=inputs, onnx_path=exported[1], log=lambda _: None)
    first, second = (json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines())
    older = {k: first[k] for k in ("name", "rgb", "xyz", "score", "anomalous", "image_threshold", "branch_shares",
                                   "heatmap", "mask")}  # a line as trd wrote it before trd.record/1
    (out / "predictions.jsonl").write_text(json.dumps(older) + "\n")
    lines: list[str] = []
    again = api.predict(None, out, input_dir=inputs, onnx_path=exported[1], log=lines.append)
    assert again["scored"] == 1 and again["skipped"] == 1 and again["total"] == 2
    kept = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert kept[0] == older and kept[1]["name"] == second["name"] and kept[1]["schema"] == SCHEMA
    assert any("1 of 2 samples are already in" in line for line in lines)

