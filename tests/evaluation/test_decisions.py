"""Decisions at the deployment thresholds, modality attribution summaries and the border check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trd.config import load_config
from trd.evaluation.attribution import attribution_by_defect, colour_share, main_modality, peak_on_defect
from trd.evaluation.decisions import clopper_pearson, decision_lines, operating_point
from trd.scoring.border import border_check, border_lines
from trd.scoring.threshold import Thresholds


def test_clopper_pearson_known_values() -> None:
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))  # closed form for 0 successes
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    lo, hi = clopper_pearson(1, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.0025, 0.445)
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))


def _case() -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """4 good and 4 defective 10x10 images with hand-set scores and maps."""
    defects = ["good"] * 4 + ["color", "color", "dent", "dent"]
    scores = np.array([1.0, 2.5, 0.5, 1.5, 3.0, 1.0, 2.1, 4.0])
    maps = np.zeros((8, 10, 10), np.float32)
    maps[1, :2, :] = 5.0  # good image 1: 20 pixels above the pixel threshold (> 1 % of 100)
    maps[3, 0, 0] = 5.0  # good image 3: 1 pixel above, exactly the allowed 1 %
    gts = np.zeros((8, 10, 10), bool)
    gts[4:, 4:6, 4:6] = True  # 4 defect pixels per defective image
    maps[4, 4:6, 4:6] = 5.0  # all found
    maps[6, 4, 4:6] = 5.0  # half found
    return scores, defects, maps, gts


def test_operating_point_counts_by_hand() -> None:
    scores, defects, maps, gts = _case()
    th = Thresholds(image=2.0, pixel=3.0, target_fpr=0.1, pixel_fpr=0.01, n_validation=20, rank=2, source="v")
    point = operating_point(scores, defects, maps, gts, th)
    fp = point["image"]["false_positives"]
    assert (fp["count"], fp["of"], fp["rate"]) == (1, 4, 0.25)  # only 2.5 > 2.0 among good images
    assert fp["ci95"] == pytest.approx(list(clopper_pearson(1, 4)))
    assert point["image"]["guaranteed_fpr"] == pytest.approx(2 / 21)
    recall = point["image"]["recall"]
    assert (recall["color"]["count"], recall["dent"]["count"]) == (1, 2)
    pixel = point["pixel"]
    assert (pixel["images_over_share"]["count"], pixel["images_over_share"]["of"]) == (1, 4)  # image 3 is at the limit
    assert pixel["mean_pixel_fpr"] == pytest.approx(21 / 400)
    assert pixel["pixel_recall"] == pytest.approx({"color": 4 / 8, "dent": 2 / 8})
    lines = decision_lines(point, th)
    assert lines[0] == th.image_statement()
    assert "1 of 4 good images flagged = 25 %" in lines[1] and "95 % CI" in lines[1] and "dent 2/2 = 100 %" in lines[1]
    assert not any(line.startswith("warning") for line in lines)  # 2/21 <= 10 %: the promise meets the request


def test_attribution_summary() -> None:
    assert main_modality(2.0, 0.5) == "colour" and main_modality(-1.0, 0.1) == "geometry"
    assert main_modality(-1.0, -0.1) == "neither" and main_modality(float("nan"), 1.0) == "neither"
    assert colour_share(3.0, 1.0) == 0.75 and colour_share(3.0, -1.0) == 1.0 and math.isnan(colour_share(-1, 0))
    on_defect = np.array([False, True, True, True, False])
    table = attribution_by_defect(["good", "color", "color", "dent", "dent"], np.array([0.0, 2.0, 1.0, -0.5, 3.0]),
                                  np.array([0.1, -0.2, 0.5, 1.5, 0.0]), on_defect)
    assert list(table) == ["color", "dent", "good"]
    assert table["color"] == {"images": 2, "peak_on_defect": 2, "mean_drop_colour": 1.5,
                              "mean_drop_geometry": pytest.approx(0.15), "mainly_colour": 2, "mainly_geometry": 0,
                              "mainly_neither": 0}
    # the second dent's maximum is elsewhere: it is not counted
    assert table["dent"]["peak_on_defect"] == 1 and table["dent"]["mainly_geometry"] == 1
    assert table["dent"]["mainly_colour"] == 0 and table["good"]["peak_on_defect"] is None
    assert table["good"]["mainly_geometry"] == 1  # good images: all of them


def test_peak_on_defect() -> None:
    maps = np.zeros((2, 16, 16))
    maps[0, 3, 3] = maps[1, 12, 12] = 1.0
    gts = np.zeros((2, 16, 16), bool)
    gts[:, 5:8, 5:8] = True
    assert peak_on_defect(maps, gts, 0).tolist() == [False, False]
    assert peak_on_defect(maps, gts, 2).tolist() == [True, False]  # (3, 3) is 2 px from the mask


def test_border_check_and_advice() -> None:
    size = 128
    corner, top, centre = 0, 2 * size + 30, 64 * size + 64
    check = border_check(np.array([corner, top, centre, corner]), size)
    assert (check.images, check.near_border, check.share) == (4, 3, 0.75)
    assert check.band_area == pytest.approx(1 - (112 / 128) ** 2)  # 23 % of the image
    assert check.suspicious  # 75 %: more than half, and more than twice the band's area
    small = border_check(np.array([0, 2 * 64 + 30, 32 * 64 + 32, 0]), 64)  # at 64 px the band is 44 % of the image
    assert small.near_border == 3 and not small.suspicious
    cfg = load_config(None, ["model.weights=none", "score.foreground_only=false"])
    lines = border_lines(check, cfg)
    assert lines[0].startswith("border check: 3 of 4 validation image maxima (75 %) lie within 8 px of the image "
                               "border, which covers 23 % of the image")
    assert "score.foreground_only=true" in lines[1] and "ImageNet" in lines[1] and lines[1].startswith("warning: ")
    calm = border_check(np.array([centre] * 9 + [corner]), size)
    assert not calm.suspicious and border_lines(calm, cfg)[-1].endswith("no sign of border artefacts")
    imagenet = load_config(None, ["score.foreground_only=true"])
    advice = border_lines(check, imagenet)[1]
    assert "foreground_only" not in advice and "ImageNet" not in advice and "train.epochs" in advice
