"""The report's "at a glance" parts: the teacher banner, the decisions at the deployment thresholds
and the border check. Each is a :class:`Section` that `trd.reporting.report` renders as Markdown and HTML.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..scoring.border import BorderCheck, border_advice
from ..scoring.threshold import Thresholds


@dataclass(frozen=True)
class Table:
    """Header, rows of cell text, and definitions of header cells (shown on hover and in the glossary)."""

    header: list[str]
    rows: list[list[str]]
    help: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """A titled part of the report: an intro, highlighted warnings, paragraphs and tables."""

    title: str
    intro: str = ""
    warnings: list[str] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def teacher_banner(config: Mapping[str, Any] | None) -> str | None:
    """The banner for models whose teachers are not torchvision's ImageNet weights (else None)."""
    weights = ((config or {}).get("model") or {}).get("weights", "imagenet")
    if weights == "imagenet":
        return None
    if weights == "none":
        return ("Random teachers: this model's teachers were NOT pretrained on ImageNet (model.weights = \"none\"). "
                "Its anomaly scores mean little; use these results only to check that the pipeline runs, and "
                "train with ImageNet teachers for real use.")
    return (f"Teachers loaded from the file {weights!r}, not torchvision's ImageNet download: these results are only "
            "as good as those weights.")


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100.0 * value:.3g} %"


def _rate(r: Mapping[str, Any]) -> tuple[str, str]:
    lo, hi = r["ci95"]
    return f"{r['count']} of {r['of']} = {_pct(r['rate'])}", f"{_pct(lo)} to {_pct(hi)}"


PROMISE_HELP = ("What the threshold promises for a new good sample that is exchangeable with the validation "
                "samples: with n validation values, the k-th largest is exceeded with probability <= k/(n+1), on "
                "average over validation sets.")
CI_HELP = ("Clopper-Pearson (exact binomial) 95 % interval of the realised rate, images being the "
           "independent unit. Few good test images give a wide interval.")


def decisions_section(point: Mapping[str, Any], thresholds: Thresholds) -> Section:
    """Promise beside realised rate (with its interval) and recall per defect type."""
    image, pixel = point["image"], point["pixel"]
    n = f" (n = {thresholds.n_validation})" if thresholds.known else ""
    promise = f"<= {_pct(thresholds.guaranteed_fpr)}{n}" if thresholds.known else "unknown (older model)"
    fp, fp_ci = _rate(image["false_positives"])
    over, over_ci = _rate(pixel["images_over_share"])
    share = _pct(thresholds.pixel_fpr)
    rates = Table(
        ["decision", "threshold", "requested", "promised", "realised on this split", "95 % CI"],
        [["good image flagged", f"{thresholds.image:.4f}", _pct(thresholds.target_fpr), promise, fp, fp_ci],
         [f"good image with > {share} of its pixels flagged", f"{thresholds.pixel:.4f}",
          _pct(thresholds.target_fpr), promise, over, over_ci]],
        {"requested": "score.target_fpr: the rate asked for.", "promised": PROMISE_HELP, "95 % CI": CI_HELP,
         "threshold": "A score strictly above the threshold is anomalous (scores are fused z-scores)."})
    recall_rows = [[d, str(r["of"]), *_rate(r), _pct(pixel["pixel_recall"].get(d))] for d, r in image["recall"].items()]
    recall = Table(["defect type", "images", "image recall", "95 % CI", "pixel recall"], recall_rows,
                   {"image recall": "Share of this type's images scored above the image threshold.",
                    "95 % CI": CI_HELP,
                    "pixel recall": "Share of this type's defect pixels above the pixel threshold (pixels of one "
                                    "image are not independent: no interval)."})
    paragraphs = [thresholds.image_statement(), thresholds.pixel_statement(),
                  f"Mean pixel false-positive rate on good images: {_pct(pixel['mean_pixel_fpr'])} "
                  f"(requested per image: at most {share}).",
                  f"Thresholds chosen on: {thresholds.source or 'the validation split'}."]
    warning = thresholds.warning()
    return Section("Decisions at the deployment thresholds",
                   intro="What the thresholds promised on good validation samples, and what happened on this split.",
                   warnings=[warning] if warning else [], paragraphs=paragraphs,
                   tables=[rates, recall] if recall_rows else [rates])


def border_section(validation: BorderCheck | None, test: BorderCheck, cfg: Config, split: str = "test") -> Section:
    """Where the image maxima sit: the validation finding (with advice), and this split's for comparison."""
    warnings = border_advice(validation, cfg) if validation is not None else []
    if validation is None:
        first = "Validation check not available: the model was written by an older trd (run `trd calibrate`)."
    else:
        first = validation.finding("validation") + ("." if validation.suspicious else ": no sign of border artefacts.")
    return Section("Where the image maxima sit (border check)",
                   intro="The image score is the maximum of the fused map. If most maxima sit at the image border, "
                         "the score measures the students' border artefacts instead of the product.",
                   warnings=warnings,
                   paragraphs=[first, test.finding(split) + " (this split, for comparison)."])
