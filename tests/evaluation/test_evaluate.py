"""Per category / defect type / branch tables of evaluate_arrays, and their flat CSV rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trd.evaluation.aupro import au_pro
from trd.evaluation.tables import evaluate_arrays, pro_keys
from trd.evaluation.metrics import binary_metrics, image_auroc

DEFECTS = ["good", "good", "good", "crack", "crack", "hole", "hole", "hole"]


def _case() -> dict:
    """8 images 16x16: 3 good, 2 crack, 3 hole (the last hole's mask is empty: label 0 by mask)."""
    rng = np.random.default_rng(0)
    gts = np.zeros((8, 16, 16), dtype=bool)
    gts[3, 2:5, 2:6] = gts[4, 10:12, 3:9] = gts[5, 7:9, 7:9] = gts[6, 0:3, 12:16] = True
    maps = (rng.normal(size=gts.shape) + 2.0 * gts).astype(np.float32)
    branch = {"rgb": maps * 0.5 + rng.normal(size=gts.shape).astype(np.float32), "geo": maps[:, None] * 2.0}
    return {"scores": maps.reshape(8, -1).max(1), "labels": np.array([0, 0, 0, 1, 1, 1, 1, 1]),
            "maps": maps, "gts": gts, "defects": DEFECTS, "branch_maps": branch}


def test_overall_equals_the_metric_functions() -> None:
    c = _case()
    result = evaluate_arrays(**c, limits=(0.3, 0.05))
    y = c["gts"].reshape(8, -1).any(1)  # image labels from the masks: the last "hole" is normal
    image, pixel = binary_metrics(c["scores"], y), binary_metrics(c["maps"], c["gts"])
    pro = au_pro(c["maps"], c["gts"], (0.3, 0.05))
    assert result["overall"] == pytest.approx({
        "i_auroc": image["auroc"], "i_ap": image["ap"], "i_f1max": image["f1max"],
        "p_auroc": pixel["auroc"], "p_ap": pixel["ap"], "p_f1max": pixel["f1max"],
        "aupro@0.3": pro[0.3], "aupro@0.05": pro[0.05],
    })
    assert result["counts"] == {"images": 8, "defective": 4, "label_mismatches": 1}
    assert result["pro_method"] == "exact"
    json.dumps(result)  # plain Python numbers only


def test_per_defect_and_per_branch() -> None:
    c = _case()
    result = evaluate_arrays(**c, limits=(0.3,))
    assert sorted(result["per_defect"]) == ["crack", "hole"]
    crack = result["per_defect"]["crack"]
    assert crack["images"] == 2
    subset = [0, 1, 2, 3, 4]  # crack samples against all good ones
    assert crack["i_auroc"] == pytest.approx(image_auroc(c["scores"][subset], [0, 0, 0, 1, 1]))
    # hand-made scores: crack (0.9, 0.4) vs good (0.1, 0.5, 0.3): 3 + 2 of 6 pairs; hole by mask:
    # positives (0.2, 0.35) vs good + the empty-mask hole (0.1, 0.5, 0.3, 0.6): 1 + 2 of 8 pairs
    c["scores"] = np.array([0.1, 0.5, 0.3, 0.9, 0.4, 0.2, 0.35, 0.6])
    per_defect = evaluate_arrays(**c, limits=(0.3,))["per_defect"]
    assert (per_defect["crack"]["i_auroc"], per_defect["hole"]["i_auroc"]) == (5 / 6, 3 / 8)
    assert crack["aupro@0.3"] == pytest.approx(au_pro(c["maps"][3:5], c["gts"][3:5], (0.3,))[0.3])
    # per branch: image scores are the maxima of the given (already normalised, smoothed) maps
    rgb = result["per_branch"]["rgb"]
    y = c["gts"].reshape(8, -1).any(1)
    assert rgb["i_auroc"] == pytest.approx(image_auroc(c["branch_maps"]["rgb"].reshape(8, -1).max(1), y))
    assert rgb["aupro@0.3"] == pytest.approx(au_pro(c["branch_maps"]["rgb"], c["gts"], (0.3,))[0.3])
    # the "geo" map is the fused one doubled (N x 1 x H x W accepted): same ranking, same metrics
    assert result["per_branch"]["geo"] == pytest.approx(result["overall"])
    assert result["branch_i_auroc_per_defect"]["geo"] == pytest.approx(
        {d: result["per_defect"][d]["i_auroc"] for d in ("crack", "hole")})


def test_which_branch_finds_which_defect() -> None:
    """A colour branch that sees only cracks and a geometry branch that sees only holes."""
    c = _case()
    y = c["gts"].reshape(8, -1).any(1)
    colour, geometry = np.zeros((8, 16, 16), np.float32), np.zeros((8, 16, 16), np.float32)
    colour[:, 0, 0] = [0.1, 0.2, 0.3, 0.9, 0.8, 0.0, 0.15, 0.05]  # cracks above every good image
    geometry[:, 0, 0] = [0.1, 0.2, 0.3, 0.0, 0.25, 0.9, 0.7, 0.05]  # holes (by mask: 5, 6) above
    c["branch_maps"] = {"rgb": colour, "geo": geometry}
    table = evaluate_arrays(**c, limits=(0.3,))["branch_i_auroc_per_defect"]
    assert table["rgb"]["crack"] == 1.0 and table["geo"]["hole"] == 1.0
    assert table["rgb"]["hole"] == pytest.approx(image_auroc(colour[[0, 1, 2, 5, 6, 7], 0, 0], y[[0, 1, 2, 5, 6, 7]]))
    assert table["geo"]["crack"] == pytest.approx(2 / 6)  # 0.0 beats no good image, 0.25 beats two of 3


def test_both_pro_methods_and_missing_masks() -> None:
    c = _case()
    both = evaluate_arrays(**c, limits=(0.3, 0.01), pro_method="both")
    assert pro_keys((0.3, 0.01), "both") == ["aupro@0.3", "aupro@0.01", "aupro100@0.3", "aupro100@0.01"]
    assert both["overall"]["aupro100@0.3"] == pytest.approx(
        au_pro(c["maps"], c["gts"], (0.3,), "thresholds")[0.3])
    # without masks: folder labels are used and every pixel metric is NaN
    c.update(gts=None, branch_maps=None)
    result = evaluate_arrays(**c, limits=(0.3,))
    assert result["overall"]["i_auroc"] == pytest.approx(image_auroc(c["scores"], c["labels"]))
    assert all(math.isnan(result["overall"][k]) for k in ("p_auroc", "p_ap", "p_f1max", "aupro@0.3"))
    assert result["counts"]["label_mismatches"] == 0 and result["per_branch"] == {}
    with pytest.raises(ValueError, match="pro_method"):
        evaluate_arrays(**c, pro_method="fast")
    with pytest.raises(ValueError, match="one entry per image"):
        evaluate_arrays(**(c | {"defects": DEFECTS[:-1]}))
