"""``trd test --precision fp16``: the split is scored at fp16 and at fp32 in one run, and the change of
every metric, the largest score difference and the flipped decisions are reported (metrics.json,
the printed line, the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trd import api
from trd.evaluation.precision import precision_check, precision_line


@pytest.mark.slow
def test_trd_test_reports_what_fp16_changes_against_fp32(exported, tmp_path: Path) -> None:
    model = exported[0]
    half = api.evaluate(model, out_dir=tmp_path / "fp16", panels=False, ep="cpu", precision="fp16", log=lambda _: None)
    full = api.evaluate(model, out_dir=tmp_path / "fp32", panels=False, ep="cpu", log=lambda _: None)
    check = half["precision_check"]
    assert "precision_check" not in full
    assert check["precision"] == "fp16" and check["provider"] == "CPUExecutionProvider" and check["samples"] == 8
    for key, row in check["metrics"].items():  # the reference inside the fp16 run is the real fp32 result
        assert row["fp32"] == pytest.approx(full["overall"][key], abs=1e-12, nan_ok=True), key
        assert row["fp16"] == pytest.approx(half["overall"][key], abs=1e-12, nan_ok=True), key
    assert {"i_auroc", "p_auroc", "aupro@0.3"} <= set(check["metrics"])
    assert check["max_score_diff"] > 0 and check["max_score_diff_rel"] < 0.01  # fp16 ran, and changed little
    assert 0 <= check["decisions_changed"] <= 8
    written = json.loads((tmp_path / "fp16" / "metrics.json").read_text())["precision_check"]
    assert written["max_score_diff"] == check["max_score_diff"] and written["metrics"].keys() == check["metrics"].keys()
    line = precision_line(check)
    assert line.startswith("precision fp16 (CPUExecutionProvider) vs fp32 (CPUExecutionProvider, same run): I-AUROC ")
    assert f"decisions changed on {check['decisions_changed']} of 8 samples" in line
    assert f"Scored at reduced precision: {line}" in (tmp_path / "fp16" / "report.md").read_text()


def test_precision_check_counts_changed_decisions() -> None:
    import numpy as np

    metrics = {"i_auroc": 0.9, "p_auroc": 0.8, "aupro@0.3": 0.7, "i_ap": 0.5}
    check = precision_check("bf16", "OpenVINOExecutionProvider", metrics | {"i_auroc": 0.875}, metrics,
                            np.array([1.0, 2.05, 3.0]), np.array([1.0, 1.95, 3.5]),
                            np.zeros((3, 4, 4)), np.full((3, 4, 4), 0.25), image_threshold=2.0)
    assert check["metrics"]["i_auroc"]["change"] == pytest.approx(-0.025)
    assert check["max_score_diff"] == pytest.approx(0.5) and check["max_score_diff_rel"] == pytest.approx(0.5 / 3.5)
    assert check["max_map_diff"] == 0.25 and check["decisions_changed"] == 1
    assert "I-AUROC -0.0250, P-AUROC +0.0000, AUPRO@30% +0.0000" in precision_line(check)
