"""The record schema trd.record/2 as `trd predict` writes it; lines of older predictions still resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from trd import api
from trd.runtime.ort import open_onnx
from trd.runtime.records import SCHEMA
from trd.data.identity import content_key, files_sha256
from trd.store import open_store

KEYS = {"schema", "name", "key", "rgb", "xyz", "score", "anomalous", "score_above_threshold", "decided_by", "image_threshold",
        "threshold", "image_px", "regions", "regions_omitted", "heatmap_range", "branch_shares", "timings_ms", "model",
        "heatmap", "mask", "outline", "p_value", "input_health"}
REGION_KEYS = {"pixels", "box", "centre_px", "peak_score", "area_mm2", "depth_mm", "height_mm", "centre_mm", "outline",
               "passes_rules"}


def test_predict_writes_the_versioned_record(exported, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "dent"
    onnx = tmp_path / "model" / exported[1].name  # a folder of its own: the default store beside it is this test's
    onnx.parent.mkdir()
    shutil.copyfile(exported[1], onnx)
    api.predict(None, tmp_path / "p", input_dir=inputs, onnx_path=onnx, log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    engine = open_onnx(exported[1])
    thresholds, validation = engine.thresholds, engine.validation_scores
    for line in lines:
        assert set(line) == KEYS and line["schema"] == SCHEMA
        assert line["threshold"] == {"image": thresholds.image, "pixel": thresholds.pixel,
                                     "target_fpr": thresholds.target_fpr, "guaranteed_fpr": thresholds.guaranteed_fpr,
                                     "fpr_bound_90": thresholds.fpr_bound_90(), "validation_samples": 2,
                                     "approximate": True, "statement": thresholds.image_statement()}
        assert "with 90 % confidence" in line["threshold"]["statement"]
        above = line["score"] > thresholds.image
        assert line["image_threshold"] == thresholds.image and line["anomalous"] == line["score_above_threshold"] == above
        assert line["decided_by"].startswith(f"image score {line['score']:.4f} is {'above' if above else 'not above'}")
        assert line["image_px"] == {"width": 64, "height": 64} and "rules" not in line  # no reject rules set
        assert line["heatmap_range"]["vmin"] == 0 and line["heatmap_range"]["vmax"] >= line["score"]
        for region in line["regions"]:  # measured in the scan's cloud (metres in the file, mm here)
            assert set(region) == REGION_KEYS and region["passes_rules"] and region["area_mm2"] > 0
        # the outline picture: the RGB image as read, at its own size, changed only where regions are drawn
        drawn = np.asarray(Image.open(tmp_path / "p" / line["outline"]))
        original = np.asarray(Image.open(inputs / "rgb" / f"{line['name']}.png").convert("RGB"))
        assert drawn.shape == original.shape and (drawn != original).any() == bool(line["regions"])
        assert line["model"] == {"sha256": files_sha256(exported[1]), "engine": "onnxruntime",
                                 "provider": "CPUExecutionProvider", "precision": "fp32", "trd_version": "0.1.0"}
        assert line["p_value"] == (1 + sum(v >= line["score"] for v in validation)) / (len(validation) + 1)
        assert (line["p_value"] <= thresholds.guaranteed_fpr) == line["anomalous"]  # the same rule, two ways
        assert set(line["input_health"]) == {"brightness", "missing_3d", "z_median_m", "training"}
        assert engine.inputs.health["brightness"].to_dict() == line["input_health"]["training"]["brightness"]
        timings = line["timings_ms"]
        assert set(timings) == {"read", "score", "regions", "total"}
        assert timings["total"] >= timings["read"] + timings["score"] + timings["regions"] > 0
    assert [line["name"] for line in lines] == ["000", "001"]
    assert [(line["rgb"], line["xyz"]) for line in lines] == [("rgb/000.png", "xyz/000.tiff"), ("rgb/001.png", "xyz/001.tiff")]
    assert [line["key"] for line in lines] == [content_key(inputs / "rgb" / f"{n}.png", inputs / "xyz" / f"{n}.tiff")
                                               for n in ("000", "001")]
    store = open_store(str(onnx.parent / "results.db"))  # by default, also in the store beside the model
    stored = {s.key: s for s in store.query(source="predict", model=lines[0]["model"]["sha256"], limit=None)}
    for line in lines:
        assert stored[line["key"]].record == line and (store.folder(stored[line["key"]]) / "3d.tiff").is_file()


def test_older_lines_without_the_schema_still_resume(exported, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "good"
    out = tmp_path / "p"
    api.predict(None, out, input_dir=inputs, onnx_path=exported[1], log=lambda _: None)
    first, second = (json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines())
    older = {k: first[k] for k in ("name", "score", "anomalous", "image_threshold", "branch_shares", "heatmap", "mask")}
    older |= {"rgb": str(inputs / first["rgb"]), "xyz": str(inputs / first["xyz"])}  # as trd wrote it before
    # trd.record/1: paths as typed, no content key; such lines are matched by their files' paths
    (out / "predictions.jsonl").write_text(json.dumps(older) + "\n")
    lines: list[str] = []
    again = api.predict(None, out, input_dir=inputs, onnx_path=exported[1], log=lines.append)
    assert again["scored"] == 1 and again["skipped"] == 1 and again["total"] == 2
    kept = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert kept[0] == older and kept[1]["name"] == second["name"] and kept[1]["schema"] == SCHEMA
    assert any("1 of 2 samples are already in" in line for line in lines)



def test_reject_rules_only_narrow_predicts_decisions(exported, synth_root: Path, tmp_path: Path) -> None:
    """The exported model with reject rules in its settings (a huge smallest area), its metadata
    rewritten by trd.runtime.onnx_metadata: every flag turns into "good", saying why; nothing else changes."""
    from trd.config import Config
    from trd.runtime.onnx_metadata import copy_with_metadata
    from trd.runtime.ort import META_KEYS

    plain = open_onnx(exported[1])
    low = plain.thresholds.with_image(min(plain.validation_scores), plain.validation_scores, "test: a low threshold")
    config = Config.from_dict(plain.config.to_dict())
    config.score.min_area_mm2 = 1e6  # no region on a 10 cm scan is that large
    ruled = tmp_path / "ruled.onnx"
    copy_with_metadata(exported[1], ruled, {META_KEYS["thresholds"]: json.dumps(low.to_dict()),
                                            META_KEYS["config"]: json.dumps(config.to_dict())})
    inputs = synth_root / "puck" / "test" / "crack"
    api.predict(None, tmp_path / "p", input_dir=inputs, onnx_path=ruled, log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert any(line["score_above_threshold"] for line in lines)
    for line in lines:
        assert line["rules"] == {"min_area_mm2": 1e6, "min_depth_mm": 0.0} and not line["anomalous"]
        assert all(not r["passes_rules"] for r in line["regions"])
        if line["score_above_threshold"]:
            assert "but no region passes the rules (at least 1e+06 mm²)" in line["decided_by"]
