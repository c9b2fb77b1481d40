"""Human names and definitions of the keys in an evaluation result, and the report's plain words.

``metrics.json`` and ``metrics.csv`` keep the raw keys (``i_auroc``, ``aupro@0.3``) for tools; the
reports show the headings and definitions below. Unknown keys are shown as they are. `WORDS` is the
glossary of the words a line operator meets in the report; `outcome` names a sample's result.
"""

from __future__ import annotations

import re
from typing import Any

#: Section headings and what the section's table holds, by top-level result key.
SECTIONS: dict[str, tuple[str, str]] = {
    "overall": ("All test images", "Every metric over the whole test split."),
    "per_category": ("Per category", "Every metric per category."),
    "per_defect": ("Per defect type", "Image metrics of one defect type's images against all good test images; "
                   "pixel metrics and AU-PRO on that type's images only."),
    "per_branch": ("Each branch alone", "The metrics of one branch's own z-scored, smoothed map (its maximum "
                   "is its image score). The fused score adds the two branches."),
    "branch_i_auroc_per_defect": ("I-AUROC per defect type, each branch alone",
                                  "Which branch finds which defect type on its own (rows: branches)."),
    "modality_attribution": ("Modality attribution per defect type",
                             "How much the image score drops when one modality's input is made nominal where "
                             "the score comes from (replaced around the map's maximum by matching content of a "
                             "good validation input), averaged, and how many images are attributed mainly to "
                             "each modality; for defect types over the images whose maximum lies on the defect."),
    "counts": ("Counts", "Images in the test split."),
}

#: Column / row names: key -> (heading, definition).
TERMS: dict[str, tuple[str, str]] = {
    "i_auroc": ("I-AUROC", "Image-level area under the ROC curve: the probability that a random defective "
                "image scores higher than a random good one (0.5 = chance, 1 = perfect)."),
    "i_ap": ("I-AP", "Image-level average precision: the area under the precision-recall curve of the image "
             "scores (step-wise, as scikit-learn)."),
    "i_f1max": ("I-F1 max", "Image-level F1 score at the best threshold on this split (an optimistic upper "
                "bound: that threshold was chosen on the test data)."),
    "p_auroc": ("P-AUROC", "Pixel-level ROC AUC over all pixels of all test images (background included)."),
    "p_ap": ("P-AP", "Pixel-level average precision over all pixels of all test images."),
    "p_f1max": ("P-F1 max", "Pixel-level F1 score at the best pixel threshold on this split (optimistic)."),
    "images": ("images", "Number of images."),
    "defective": ("defective images", "Images whose resized ground-truth mask has a defect pixel."),
    "label_mismatches": ("label mismatches", "Images whose folder label disagrees with their resized mask."),
    "rgb": ("rgb (colour branch)", "The branch whose main input is the RGB image; it also sees the 3D image "
            "through its Filter and Amplifier."),
    "geo": ("geo (geometry branch)", "The branch whose main input is the 3D image; it also sees the RGB image "
            "through its Filter and Amplifier."),
    "fused": ("fused (one student)", "The fused-teacher baseline's single branch."),
    "peak_on_defect": ("maximum on the defect", "Images whose fused map has its maximum on the defect (its "
                       "mask grown by the smoothing radius): the attribution columns count these."),
    "mean_drop_colour": ("mean score drop, colour", "Mean of (score - score with the RGB image made nominal "
                         "around the maximum), in score units (fused z-score)."),
    "mean_drop_geometry": ("mean score drop, geometry", "Mean of (score - score with the 3D image made nominal "
                           "around the maximum), in score units."),
    "mainly_colour": ("mainly colour", "Images whose colour drop is positive and larger than the geometry drop."),
    "mainly_geometry": ("mainly geometry", "Images whose geometry drop is positive and larger than the colour drop."),
    "mainly_neither": ("neither", "Images where neither replacement lowers the score: no single input explains it."),
}

_PRO = re.compile(r"^(aupro|aupro100)@(.+)$")
_PRO_TEXT = {
    "aupro": "official exact MVTec curve",
    "aupro100": "the reference code's 100-threshold curve, coarse at small limits",
}


def term(key: str) -> tuple[str, str]:
    """(heading, definition) of a metric, column or row key; unknown keys come back as they are.

    Example:
        >>> term("aupro@0.3")[0]
        'AU-PRO (FPR <= 30 %)'
    """
    if key in TERMS:
        return TERMS[key]
    match = _PRO.match(key)
    if match:
        kind, limit = match.groups()
        try:
            pct = f"{100 * float(limit):g}"
        except ValueError:
            return key, ""
        head = "AU-PRO" if kind == "aupro" else "AU-PRO, 100 thresholds"
        return (f"{head} (FPR <= {pct} %)",
                f"Area under the per-region-overlap curve up to a pixel false-positive rate of {pct} %, divided "
                f"by {pct} % (1 = every defect region fully found before {pct} % of good pixels are flagged); "
                f"{_PRO_TEXT[kind]}.")
    return key, ""


def section(key: str) -> tuple[str, str]:
    """(heading, description) of a top-level result group."""
    return SECTIONS.get(key, (key.replace("_", " "), ""))


#: The report's glossary: words that stay, explained (HTML and Markdown reports).
WORDS: dict[str, str] = {
    "score": "How unusual a scan looks to the model: the highest value of its anomaly heatmap. Higher is more "
             "anomalous; it has no unit.",
    "threshold": "A scan whose score is above the image threshold is flagged (with reject rules, only when one of "
                 "its regions is also large and deep enough).",
    "defect found": "A defective part that was flagged.",
    "missed defect": "A defective part that was not flagged.",
    "false alarm": "A good part that was flagged.",
    "good, passed": "A good part that was not flagged.",
    "flagged region": "Touching pixels of the heatmap above the pixel threshold, outlined in white on the heatmaps; "
                      "its area (mm²), depth or height (mm, against the surface around it) and centre (mm, in the "
                      "scanner's axes) are measured in the scan's 3D points.",
    "validation samples": "Good parts the model did not learn from, kept to choose the thresholds.",
    "on average / with 90 % confidence": "With n validation samples, a threshold at the k-th highest of their "
                                         "scores flags a new good part in at most k/(n+1) of cases, on average over "
                                         "the validation samples a line could collect. The rate of the one threshold "
                                         "chosen scatters around that; it stays below the second figure in 9 of 10 "
                                         "cases. Approximate: the same samples also set the model's normalisation.",
    "95 % range": "Where the true rate lies with 95 % confidence, given what was counted on this split (an exact "
                  "binomial interval; each image counts once). Few images give a wide range.",
    "colour student / shape student": "The model's two parts: one reads mostly the colour image, the other mostly "
                                      "the 3D scan. Each also sees the other input, so their parts of a score do not "
                                      "say which input caused it (`trd test --explain` measures that).",
    "AU-PRO": "How much of each true defect is flagged before a given share of good pixels is (e.g. 1 %), from 0 "
              "to 1; 0 means no defect region is found at that strict a setting.",
}


def outcome(label: int, decision: bool | None) -> str:
    """A sample's result in plain words: "defect found", "missed defect", "false alarm", "good, passed"
    (or "not decided" without a decision)."""
    if decision is None:
        return "not decided"
    if label:
        return "defect found" if decision else "missed defect"
    return "false alarm" if decision else "good, passed"


def region_lines(findings: Any) -> list[str]:
    """One line per flagged region of a sample's `trd.runtime.findings.Findings`: size, depth, centre
    and, with reject rules, whether it counts."""
    lines = []
    for i, region in enumerate(findings.regions, start=1):
        centre = region.centre_mm
        where = (f"centre x {centre[0]:.4g}, y {centre[1]:.4g}, z {centre[2]:.4g} mm" if centre is not None else
                 f"centre at pixel x {region.centre_px[0]:.0f}, y {region.centre_px[1]:.0f}")
        rule = ""
        if findings.rules.active:
            failure = findings.rules.failure(region)
            rule = "; passes the reject rules" if failure is None else f"; left out by the reject rules ({failure})"
        lines.append(f"Region {i}: {region.size_text()}, {where}{rule}")
    if findings.omitted:
        lines.append(f"... and {findings.omitted} more with lower scores")
    return lines
