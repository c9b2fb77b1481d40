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


PROMISE_HELP = ("How often a good part would be flagged, as promised by the good validation samples the threshold "
                "was chosen on: on average over the validation samples a line could collect, and what this one "
                "threshold keeps with 90 % confidence (see 'on average / with 90 % confidence').")
CI_HELP = ("Where the true rate lies with 95 % confidence, given this split's count (an exact binomial interval; "
           "each image counts once). Few good test images give a wide range.")


def _promise(thresholds: Thresholds, average: float | None, bound: float | None) -> str:
    if not thresholds.known:
        return "unknown (older model)"
    approximate = ", approximate" if thresholds.approximate else ""
    return (f"<= {_pct(average)} on average; <= {_pct(bound)} with 90 % confidence "
            f"(n = {thresholds.n_validation}{approximate})")


def decisions_section(point: Mapping[str, Any], thresholds: Thresholds) -> Section:
    """Promise beside realised rate (with its range) and the defects found per defect type."""
    image, pixel = point["image"], point["pixel"]
    fp, fp_ci = _rate(image["false_positives"])
    over, over_ci = _rate(pixel["images_over_share"])
    share = _pct(thresholds.pixel_fpr)
    rates = Table(
        ["decision", "threshold", "requested", "promised", "seen on this split", "95 % range"],
        [["false alarm (good image flagged)", f"{thresholds.image:.4f}", _pct(thresholds.target_fpr),
          _promise(thresholds, thresholds.guaranteed_fpr, thresholds.fpr_bound_90()), fp, fp_ci],
         [f"good image with > {share} of its pixels flagged", f"{thresholds.pixel:.4f}",
          _pct(thresholds.target_fpr), _promise(thresholds, thresholds.pixel_guaranteed_fpr,
                                                thresholds.pixel_bound_90()), over, over_ci]],
        {"requested": "score.target_fpr: the rate asked for.", "promised": PROMISE_HELP, "95 % range": CI_HELP,
         "threshold": "A score strictly above the threshold is flagged (scores are the model's normalised units)."})
    recall_rows = [[d, str(r["of"]), *_rate(r), _pct(pixel["pixel_recall"].get(d))] for d, r in image["recall"].items()]
    recall = Table(["defect type", "images", "defects found", "95 % range", "defect pixels flagged"], recall_rows,
                   {"defects found": "Share of this type's images that were flagged (the others are missed defects).",
                    "95 % range": CI_HELP,
                    "defect pixels flagged": "Share of this type's defect pixels above the pixel threshold (pixels of "
                                             "one image are not independent: no range)."})
    paragraphs = [thresholds.image_statement(), thresholds.pixel_statement(),
                  f"Mean share of a good image's pixels flagged: {_pct(pixel['mean_pixel_fpr'])} "
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
