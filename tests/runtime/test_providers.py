"""Execution providers and precisions on this install (the CPU build): which builds are installed,
what ``auto`` runs on, the float16 graph, TensorRT's engine cache keys, and the Ray batch scorer
answering what predict writes (without Ray: the scorer is a plain callable class)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from trd import api
from trd.data.identity import content_key, files_sha256
from trd.data.samples import unlabelled_samples
from trd.errors import CheckpointError
from trd.runtime.batch_scorer import BatchScorer, sample_row
from trd.runtime.batches import load_batch
from trd.runtime.ort import _trt_settings, open_onnx
from trd.runtime.providers import build_problem, installed_builds, placement
from trd.runtime.records import model_record
from trd.workflows.predict import target_of


def _dist_info(site: Path, folder: str, name: str, version: str, files: str) -> None:
    """A distribution's metadata as pip leaves it in site-packages."""
    info = site / folder
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(files)


def test_builds_are_found_by_their_metadata(tmp_path: Path) -> None:
    assert installed_builds([str(tmp_path)]) == {} and build_problem({}) is None
    _dist_info(tmp_path, "onnxruntime_gpu-1.31.1.dist-info", "onnxruntime-gpu", "1.31.1", "onnxruntime/__init__.py,,\n")
    _dist_info(tmp_path, "onnxruntime_extensions-0.14.0.dist-info", "onnxruntime_extensions", "0.14.0",
               "onnxruntime_extensions/__init__.py,,\n")  # another package, not a build
    _dist_info(tmp_path, "onnxruntime_foo-1.0.dist-info", "onnxruntime-foo", "1.0", "onnxruntime/__init__.py,,\n")
    assert installed_builds([str(tmp_path)]) == {"onnxruntime-gpu": "1.31.1", "onnxruntime-foo": "1.0"}
    problem = build_problem(installed_builds([str(tmp_path)]))
    assert problem.startswith("2 ONNX Runtime builds are installed (onnxruntime-foo==1.0, onnxruntime-gpu==1.31.1)")
    assert "pip uninstall -y onnxruntime-foo onnxruntime-gpu && pip install 'trd-anomaly[cpu]'" in problem


def test_auto_runs_on_the_cpu_here_and_says_so(exported) -> None:
    engine = open_onnx(exported[1], 1)
    assert engine.provider == "CPUExecutionProvider" and engine.precision == "fp32"
    assert engine.placement.ep == "cpu" and engine.session.get_providers()[0] == "CPUExecutionProvider"


def test_fp16_runs_a_float16_graph_made_once(exported, synth_root: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    os.link(exported[1], model)
    logged: list[str] = []
    half = open_onnx(model, 1, ep="cpu", precision="fp16", log=logged.append)
    sha = files_sha256(model)
    graph = tmp_path / ".onnx-cache" / f"model-fp16-{sha[:16]}.onnx"
    assert half.precision == "fp16" and half.provider == "CPUExecutionProvider" and graph.is_file()
    assert logged == [f"converting {model} to float16: {graph} (once per model)"]
    assert os.path.getsize(graph) < 0.6 * os.path.getsize(model)  # the weights are float16 now
    full = open_onnx(model, 1, ep="cpu")
    samples, _ = unlabelled_samples(full.config.data, synth_root / "puck" / "test" / "crack")
    batch = load_batch(samples, range(len(samples)), full.config.data, reference=full.inputs)
    a, b = full(batch.rgb, batch.x3d), half(batch.rgb, batch.x3d)
    diff = np.abs(a["score"] - b["score"])
    assert diff.max() < 0.01 * np.abs(a["score"]).max() and np.abs(a["anomaly_map"] - b["anomaly_map"]).max() > 0
    stamp = graph.stat().st_mtime_ns
    again: list[str] = []
    open_onnx(model, 1, ep="cpu", precision="fp16", log=again.append)
    assert again == [] and graph.stat().st_mtime_ns == stamp  # reused, not made again


def test_tensorrt_engines_are_kept_per_model_precision_and_shape(exported, tmp_path: Path) -> None:
    """TensorRT cannot run here; what can be checked is where its engines would go and what
    onnxruntime is told."""
    model = tmp_path / "model.onnx"
    os.link(exported[1], model)
    sha = files_sha256(model)
    settings = _trt_settings(model, "fp16", 8)
    assert settings["trt_cache"] == tmp_path / ".trt-cache" / f"model-{sha[:16]}-fp16-64px-b8"
    assert settings["trt_shapes"] == {"min": "rgb:1x3x64x64,x3d:1x3x64x64", "opt": "rgb:8x3x64x64,x3d:8x3x64x64",
                                      "max": "rgb:8x3x64x64,x3d:8x3x64x64"}
    assert _trt_settings(model, "fp32", 8)["trt_cache"] != settings["trt_cache"]
    assert _trt_settings(model, "fp16", 16)["trt_cache"] != settings["trt_cache"]
    chain = placement("tensorrt", "fp16", threads=1, **settings).providers
    trt = dict(chain[0][1])
    assert chain[0][0] == "TensorrtExecutionProvider" and [c[0] for c in chain[1:2]] == ["CUDAExecutionProvider"]
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(settings["trt_cache"])
    assert trt["trt_fp16_enable"] == "True" and trt["trt_profile_max_shapes"] == "rgb:8x3x64x64,x3d:8x3x64x64"
    assert dict(placement("cuda", "fp32", threads=1).providers[0][1])["use_tf32"] == "0"


def test_batch_scorer_answers_what_predict_writes(exported, synth_root: Path, tmp_path: Path) -> None:
    inputs = synth_root / "puck" / "test" / "color"
    api.predict(None, tmp_path / "p", input_dir=inputs, onnx_path=exported[1], threads=1, log=lambda _: None)
    written = {r["name"]: r for r in map(json.loads, (tmp_path / "p" / "predictions.jsonl").read_text().splitlines())}
    engine = open_onnx(exported[1], 1)
    samples, _ = unlabelled_samples(engine.config.data, inputs)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    samples.append(dataclasses.replace(samples[0], rgb=bad))
    keys = [content_key(s.rgb, s.xyz) if s.rgb.suffix == ".png" and s.rgb != bad else "" for s in samples]
    rows = [sample_row(i, s, target_of(s, k, inputs)) for i, (s, k) in enumerate(zip(samples, keys, strict=True))]
    sha = files_sha256(exported[1])
    scorer = BatchScorer(str(exported[1]), sha, model_record(sha, "onnxruntime", ""), threads=1)
    answer = scorer({k: np.array([r[k] for r in rows], object) for k in rows[0]})
    assert list(answer["index"]) == [0, 1, 2] and answer["error"][:2].tolist() == ["", ""]
    assert "bad.png" in answer["error"][2] and answer["record"][2] == ""
    for record, names, images in zip(map(json.loads, answer["record"][:2]), answer["names"][:2], answer["images"][:2],
                                     strict=True):
        ours = {k: v for k, v in record.items() if k != "timings_ms"}
        assert ours == {k: v for k, v in written[record["name"]].items() if k != "timings_ms"}
        pictures = dict(zip(names, images, strict=True))
        for what, name in (("heatmap", "heatmap-fused.png"), ("mask", "mask.png"), ("outline", "outline.png")):
            assert pictures[name] == (tmp_path / "p" / record[what]).read_bytes()
    with pytest.raises(CheckpointError, match="this worker's copy differs from the driver's"):
        BatchScorer(str(exported[1]), "0" * 64, model_record(sha, "onnxruntime", ""))
