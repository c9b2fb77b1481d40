"""What a user reads first, end to end on the tiny model: the thresholds' promise (fit log, model.pt,
ONNX metadata, report), `trd calibrate`, modality attribution, the banner and the border check."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from trd import api
from trd.checkpoint import load_checkpoint
from trd.config import load_config
from trd.data.cache import build_cache
from trd.data.dataset import PairDataset
from trd.data.identity import content_key
from trd.data.samples import list_samples
from trd.detector import load_detector
from trd.errors import CheckpointError, ConfigError, TRDError
from trd.detector.counterfactual import nominal_inputs
from trd.scoring.threshold import order_statistic_threshold

from .conftest import TINY


@pytest.fixture(scope="module")
def trained(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """(model.pt, fit log lines) of the tiny model, trained once for this module (2 validation samples)."""
    run = tmp_path_factory.mktemp("trust")
    cfg = load_config(None, [*TINY, f"data.root={synth_root}", "data.category=puck", f"data.cache_dir={run / 'cache'}"])
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        model = api.fit(cfg, run, progress=False, log=lines.append)
    return model, lines


def _good_dataset(model: Path, split: str) -> PairDataset:
    _, cfg, _, _ = load_detector(model)
    samples = [s for s in list_samples("mvtec3d", Path(cfg.data.root), "puck", split) if s.label == 0]
    return PairDataset(samples, cfg.data, build_cache(cfg.data))


def test_fit_states_the_guarantee_and_warns_about_small_n(trained) -> None:
    model, lines = trained
    # 2 validation samples: one gives the normalisation statistics, the other the thresholds (exact)
    assert "validation: normalisation statistics from 1 sample(s), thresholds from the other 1 (exact)" in lines
    assert any(line.startswith("image threshold ") and "(n = 1 validation samples)" in line for line in lines)
    assert any("false-positive rate <= 50 % on average over validation sets; this threshold <= 90 % with 90 % "
               "confidence" in line for line in lines)  # k/(n+1) = 1/2; Beta(1, 1) is uniform
    assert not any("approximate" in line for line in lines)
    warning = next(line for line in lines if "cannot support" in line)
    assert warning.startswith("warning: 1 validation samples cannot support the requested 1 % false-positive rate")
    assert "smallest rate they support is 50 %" in warning and "at least 99 good samples" in warning
    assert any(line.startswith("border check: ") for line in lines)

    blob = load_checkpoint(model, "model")
    record = blob["thresholds"]
    assert (record["n_validation"], record["rank"], record["sufficient"], record["approximate"]) == (1, 1, False, False)
    assert record["guaranteed_fpr"] == pytest.approx(1 / 2) and record["samples_needed"] == 99
    assert record["fpr_bound_90"] == pytest.approx(0.9) and record["statements"][-1] == warning
    assert set(blob["reference"]) == {"rgb", "x3d"} and blob["reference"]["rgb"].shape == (2, 3, 64, 64)
    assert blob["extra"]["border_check"]["images"] == 2  # where maxima sit: every validation sample
    root = Path(blob["config"]["data"]["root"]) / "puck" / "validation" / "good"
    assert blob["extra"]["stats_keys"] == [content_key(root / "rgb" / "000.png", root / "xyz" / "000.tiff")]
    scores = blob["extra"]["validation_scores"]  # at full precision: the threshold is the k-th largest, exactly
    assert len(scores) == 1 and sorted(scores, reverse=True)[record["rank"] - 1] == record["image"]


def test_onnx_metadata_carries_the_guarantee(trained, tmp_path) -> None:
    pytest.importorskip("onnx")
    import onnx

    path = api.export(trained[0], tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    record = json.loads(meta["trd.thresholds"])
    assert record["sufficient"] is False and record["smallest_supported_fpr"] == pytest.approx(1 / 2)
    assert any("cannot support" in line for line in record["statements"])


def test_report_shows_banner_decisions_border_and_attribution(trained, tmp_path) -> None:
    result = api.evaluate(trained[0], out_dir=tmp_path, panels=False, explain=True)
    point = result["operating_point"]
    assert point["image"]["false_positives"]["of"] == 2 and len(point["image"]["false_positives"]["ci95"]) == 2
    assert set(point["image"]["recall"]) == {"color", "crack", "dent"}
    assert set(result["modality_attribution"]) == {"color", "crack", "dent", "good"}
    assert result["border_check"]["validation"]["images"] == 2 and result["border_check"]["this_split"]["images"] == 8
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "> **WARNING: Random teachers" in md.splitlines()[2]
    assert "## Decisions at the deployment thresholds" in md and "cannot support the requested 1 %" in md
    assert "| false alarm (good image flagged) |" in md and "95 % range" in md and "## Where the image maxima sit" in md
    assert "## Modality attribution per defect type" in md and "## I-AUROC per defect type, each branch alone" in md
    assert "branch_i_auroc_per_defect" not in md.split("## Configuration")[0]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.index('class="banner"') < html.index("Decisions at the deployment thresholds")
    summary = api.decision_summary(result)
    assert "on this split: " in summary and "recall color" in summary


def test_explain_is_the_counterfactual_score_drop(trained) -> None:
    detector, cfg, _, _ = load_detector(trained[0])
    assert detector.reference["rgb"].shape == (2, 3, 64, 64)  # both validation inputs (at most BANK_SIZE)
    item = _good_dataset(trained[0], "test")[0]
    rgb, x3d = item["rgb"][None], item["x3d"][None]
    with torch.inference_mode():
        out = detector.explain(rgb, x3d)
        torch.testing.assert_close(out["score"], detector(rgb, x3d)["score"])
        peak = out["anomaly_map"].flatten(1).argmax(1)
        no_colour = detector(nominal_inputs(rgb, detector.reference["rgb"], peak), x3d)["score"]
        no_geometry = detector(rgb, nominal_inputs(x3d, detector.reference["x3d"], peak))["score"]
    torch.testing.assert_close(out["attribution_colour"], out["score"] - no_colour)
    torch.testing.assert_close(out["attribution_geometry"], out["score"] - no_geometry)
    with torch.inference_mode():  # a stored good input is its own best match: nothing changes
        ref = {k: v[:1] for k, v in detector.reference.items()}
        same = detector.explain(ref["rgb"], ref["x3d"])
    assert abs(float(same["attribution_colour"])) < 1e-4 and abs(float(same["attribution_geometry"])) < 1e-4


def test_predict_explain_records(trained, synth_root, tmp_path) -> None:
    inputs = synth_root / "puck" / "test" / "color"
    api.predict(trained[0], tmp_path / "p", input_dir=inputs, explain=True)
    record = json.loads((tmp_path / "p" / "predictions.jsonl").read_text().splitlines()[0])
    assert set(record["branch_shares"]) == {"rgb", "geo"} and "contributions" not in record
    assert set(record["modality_attribution"]) == {"colour", "geometry"}
    plain = api.predict(trained[0], tmp_path / "q", input_dir=inputs)
    assert "modality_attribution" not in (tmp_path / "q" / "predictions.jsonl").read_text() and plain["scored"] == 2
    with pytest.raises(ConfigError, match="--explain needs --model"):
        api.predict(None, tmp_path / "r", input_dir=inputs, onnx_path=tmp_path / "x.onnx", explain=True)


def test_calibrate_adds_new_good_samples_to_the_validation_pool(trained, tmp_path, messages) -> None:
    model = trained[0]
    out = tmp_path / "recal.pt"
    lines: list[str] = []
    # the test split measures thresholds and the training split taught the students: refused unless forced
    with pytest.raises(ConfigError, match="--split test: the test split is there to measure") as test_split:
        api.calibrate(model, split="test", out=out)
    with pytest.raises(ConfigError, match="--split train: these are the model's own training images") as train_split:
        api.calibrate(model, split="train", out=out)
    assert "or --force" in str(train_split.value) and not out.exists()
    messages.record("setting", "calibrate --split test", f"error: {test_split.value}")
    messages.record("setting", "calibrate --split train (the model's own training images)", f"error: {train_split.value}")
    assert api.calibrate(model, split="test", out=out, target_fpr=0.3, force=True, log=lines.append) == out
    assert any("defective left out" in line for line in lines)
    assert any(line.startswith("warning: --split test") and line.endswith("(--force)") for line in lines)
    old_det, _, old, old_extra = load_detector(model)
    new_det, _, new, extra = load_detector(out)
    # the statistics are kept: the same sample gets the same score from both models
    for a, b in zip(old_det.scorer.state_dict().values(), new_det.scorer.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    dataset = _good_dataset(model, "test")
    with torch.inference_mode():
        scores = np.array([float(old_det(d["rgb"][None], d["x3d"][None])["score"]) for d in dataset])
    pool = np.concatenate([old_extra["validation_scores"], scores])  # added to the model's pool (the validation samples that did not give the statistics)
    image, rank = order_statistic_threshold(pool, 0.3)
    assert new.image == pytest.approx(image) and new.rank == rank and new.n_validation == len(pool)
    assert extra["validation_scores"] == pytest.approx(pool.tolist()) and len(extra["validation_pixel_values"]) == len(pool)
    assert new.target_fpr == 0.3 and new.source.endswith("(validation split) + 2 of " + new.source.split(" + 2 of ")[1])
    assert "(test split)" in new.source and "calibration samples" in new.image_statement()
    assert extra["calibrations"][-1]["previous"]["image"] == old.image
    assert extra["border_check"] == old_extra["border_check"]  # the training run's, when adding
    before = next(i for i, ln in enumerate(lines) if ln.startswith("calibrate: before: image threshold"))
    assert f"(n = {len(pool) - 2} validation samples)" in lines[before] and lines[before + 1].startswith("calibrate: after")
    assert f"(n = {len(pool)} calibration samples)" in lines[before + 2]
    lines.clear()
    again = api.calibrate(out, split="test", out=tmp_path / "again.pt", force=True, log=lines.append)  # nothing is added twice
    assert load_detector(again)[2].n_validation == len(pool) and any("2 of the 2 samples" in ln for ln in lines)
    alone = api.calibrate(model, split="test", out=tmp_path / "alone.pt", target_fpr=0.3, replace=True, force=True,
                          log=lines.append)
    _, _, fresh, fresh_extra = load_detector(alone)
    assert fresh.n_validation == 2 and fresh.image == pytest.approx(order_statistic_threshold(scores, 0.3)[0])
    assert fresh_extra["calibrations"][-1]["pool"] == "replaced" and fresh_extra["border_check"]["images"] == 2
    # never silently replaced, never the input model
    with pytest.raises(ConfigError, match="exists") as exists:
        api.calibrate(model, split="test", out=out, force=True)
    with pytest.raises(ConfigError, match="input model") as itself:
        api.calibrate(model, out=model)
    with pytest.raises(ConfigError, match=r"--target-fpr must be in \[0, 1\), got 1.5") as rate:
        api.calibrate(model, out=tmp_path / "x.pt", target_fpr=1.5)
    messages.record("setting", "calibrate --out names an existing file", f"error: {exists.value}")
    messages.record("setting", "calibrate --out is the input model", f"error: {itself.value}")
    messages.record("setting", "calibrate --target-fpr 1.5", f"error: {rate.value}")
    assert api.calibrate(model, split="test", out=out, overwrite=True, force=True) == out


def test_calibrate_on_the_own_validation_split_leaves_out_the_statistics_samples(trained, tmp_path) -> None:
    lines: list[str] = []
    out = api.calibrate(trained[0], out=tmp_path / "v.pt", log=lines.append)
    assert any(ln.startswith("calibrate: leaving out the 1 sample(s) of ") and
               ln.endswith("(validation split) that gave the normalisation statistics") for ln in lines)
    _, _, thresholds, _ = load_detector(out)
    assert thresholds.n_validation == 1 and not thresholds.approximate


def test_a_typed_threshold_on_a_model_pt_is_a_new_file(trained, tmp_path, messages) -> None:
    """What the review page's "write a new model file" does for a served model.pt: a new checkpoint
    with the typed image threshold, its promise and the previous thresholds in its history."""
    from trd.workflows.engine import load_model
    from trd.workflows.threshold import write_threshold

    model = load_model(trained[0], engine="torch", device="cpu")
    (score,) = model.validation_scores
    path, thresholds = write_threshold(model, score + 0.5, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("model.threshold-") and path.suffix == ".pt"
    _, _, stored, extra = load_detector(path)
    assert stored == thresholds and stored.image == score + 0.5 and stored.rank == 1 and stored.n_validation == 1
    assert extra["calibrations"][-1]["previous"] == load_checkpoint(trained[0], "model")["thresholds"]
    assert extra["validation_scores"] == [score]
    with pytest.raises(ConfigError, match="below the lowest validation score") as low:
        write_threshold(model, score - 1.0, tmp_path)
    messages.record("setting", "a typed threshold below every validation score (review page, POST /v1/threshold)",
                    f"error: {low.value}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_calibrate_needs_good_samples(trained, synth_root, tmp_path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root / "puck" / "test" / "dent", root / "puck" / "test" / "dent")
    with pytest.raises(TRDError, match=r"no good samples in .*puck \(test split\)"):
        api.calibrate(trained[0], data_root=root, split="test", out=tmp_path / "x.pt", force=True)


def test_damaged_records_are_one_line_checkpoint_errors(trained, tmp_path) -> None:
    blob = torch.load(trained[0], map_location="cpu", weights_only=True)
    bad_rank = dict(blob, thresholds=blob["thresholds"] | {"rank": 4, "n_validation": 3})
    bad_reference = dict(blob, reference={"rgb": blob["reference"]["rgb"][:, :, :8], "x3d": blob["reference"]["x3d"]})
    for name, edited, words in (("rank.pt", bad_rank, "impossible rank 4 of 3"),
                                ("reference.pt", bad_reference, "damaged reference entry")):
        torch.save(edited, tmp_path / name)
        with pytest.raises(CheckpointError, match=words):
            load_detector(tmp_path / name)


def test_models_of_older_versions_load_and_say_the_guarantee_is_unknown(trained, tmp_path, messages) -> None:
    blob = torch.load(trained[0], map_location="cpu", weights_only=True)
    blob["thresholds"] = {k: blob["thresholds"][k] for k in ("image", "pixel", "target_fpr", "pixel_fpr")}
    del blob["reference"]
    blob["extra"].pop("border_check")
    for key in ("validation_pixel_values", "validation_keys", "validation_sources"):  # before the pool was kept
        blob["extra"].pop(key)
    old = tmp_path / "old.pt"
    torch.save(blob, old)
    detector, _, thresholds, _ = load_detector(old)
    assert not thresholds.known and detector.reference is None
    with pytest.raises(TRDError, match="no good inputs"):
        detector.explain(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
    with pytest.raises(CheckpointError, match="has no good inputs for --explain"):
        api.predict(old, tmp_path / "p", input_dir=Path(blob["config"]["data"]["root"]) / "puck" / "test" / "dent",
                    explain=True)
    with pytest.raises(CheckpointError, match="has no good inputs for --explain") as old_explain:
        api.evaluate(old, out_dir=tmp_path / "e", explain=True)
    messages.record("input", "test --explain with a model of an older trd", f"error: {old_explain.value}")
    api.evaluate(old, out_dir=tmp_path / "report", panels=False)
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "guarantee is unknown" in md and "Validation check not available" in md
    # calibrate adds what was missing: a stated guarantee, the reference and the pool (its validation
    # split rescored; the same samples are not added a second time)
    lines: list[str] = []
    new = api.calibrate(old, log=lines.append)
    detector, _, thresholds, extra = load_detector(new)
    assert thresholds.known and detector.reference is not None and thresholds.n_validation == 2
    assert len(extra["validation_keys"]) == 2 and any("is rebuilt by rescoring its validation split" in ln for ln in lines)
    moved = torch.load(old, map_location="cpu", weights_only=True)
    moved["config"]["data"]["root"] = str(tmp_path / "gone")
    torch.save(moved, tmp_path / "moved.pt")
    with pytest.raises(ConfigError, match="cannot be read to rebuild them: pass --replace") as unreadable:
        api.calibrate(tmp_path / "moved.pt", data_root=blob["config"]["data"]["root"], split="test", force=True)
    messages.record("setting", "calibrate a model of an older trd whose validation data is gone",
                    f"error: {unreadable.value}")
