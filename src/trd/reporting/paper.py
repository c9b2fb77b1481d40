"""Published TRD results on MVTec 3D-AD (docs/METHOD.md §7.1) and the reproduction table against them.

All numbers are in percent, as published in the reference repository's results image (see
docs/METHOD.md §7.1); the per-class values follow CATEGORIES. Baseline rows are kept as published for reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: MVTec 3D-AD categories in the column order of the published tables.
CATEGORIES = (
    "bagel", "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire",
)
#: Published metrics (keys of PUBLISHED) -> title of the published table.
METRIC_KEYS = {"i_auroc": "I-AUROC", "p_auroc": "P-AUROC", "aupro@0.3": "AUPRO@30%"}


@dataclass(frozen=True)
class Comparison:
    """Which of our metrics is compared with a published one, and what the table says about it.

    ``ours``: our metric key, computed as the published number was; ``also``: (row label, our key)
    rows shown for information, without a difference; ``note``: printed under the table.
    """

    published: str
    ours: str
    label: str = "ours"
    also: tuple[tuple[str, str], ...] = ()
    note: str = ""


#: What `trd reproduce` compares. The published AU-PRO comes from scripts that print the reference's
#: 100-threshold curve (docs/METHOD.md §7.1), so it is compared with ours on the same curve.
COMPARISONS = (
    Comparison("i_auroc", "i_auroc"),
    Comparison("p_auroc", "p_auroc"),
    Comparison("aupro@0.3", "aupro100@0.3", label="ours (100-threshold curve)",
               also=(("ours (exact curve)", "aupro@0.3"),),
               note="AU-PRO: the published numbers are compared with ours on the reference code's "
                    "100-threshold curve (`aupro100@0.3`), the one the reference scripts of the "
                    "published results' date print (docs/METHOD.md §6, §7.1); the official exact "
                    "MVTec curve (`aupro@0.3`, the toolkit's default) is shown for information, "
                    "without a difference."),
)
#: 3D modality of our run (config ``data.modality_3d``) -> modality of the published TRD row.
MODALITY_ROWS = {"normals": "RGB+Normal", "depth": "RGB+Depth"}


@dataclass(frozen=True)
class PublishedRow:
    """One published table row; ``values`` follow CATEGORIES, empty where only the mean is given."""

    method: str
    modality: str
    values: tuple[float, ...]
    mean: float

    @property
    def name(self) -> str:
        return f"{self.method} {self.modality}"

    def by_category(self) -> dict[str, float]:
        return dict(zip(CATEGORIES, self.values, strict=True)) if self.values else {}


#: Published rows per metric key (P-AUROC and AUPRO rows of baselines carry the I-AUROC table's
#: modality; the published P-AUROC and AU-PRO tables print them without one).
PUBLISHED: dict[str, tuple[PublishedRow, ...]] = {
    "i_auroc": (
        PublishedRow("BTF", "RGB+PC", (91.8, 74.8, 96.7, 88.3, 93.2, 58.2, 89.6, 91.2, 92.1, 88.6), 86.5),
        PublishedRow("M3DM", "RGB+PC", (99.4, 90.9, 97.2, 97.6, 96.0, 94.2, 97.3, 89.9, 97.2, 85.0), 94.5),
        PublishedRow("Shape-guided", "RGB+PC", (98.6, 89.4, 98.3, 99.1, 97.6, 85.7, 99.0, 96.5, 96.0, 86.9), 94.7),
        PublishedRow("AST", "RGB+D", (98.3, 87.3, 97.6, 97.1, 93.2, 88.5, 97.4, 98.1, 100.0, 79.7), 93.7),
        PublishedRow("MMRD", "RGB+D", (99.9, 94.3, 96.4, 94.3, 99.2, 91.2, 94.9, 90.1, 99.4, 90.1), 95.0),
        PublishedRow("CFM", "RGB+PC", (98.8, 87.5, 98.4, 99.2, 99.7, 92.4, 96.4, 94.9, 97.9, 95.0), 96.0),
        PublishedRow("3D-ADNAS", "RGB+D", (99.7, 100.0, 97.1, 98.6, 96.6, 94.8, 89.7, 87.3, 100.0, 86.7), 95.1),
        PublishedRow("TRD", "RGB+Depth", (99.6, 96.1, 98.2, 98.5, 99.7, 90.1, 99.2, 97.6, 100.0, 83.3), 96.2),
        PublishedRow("TRD", "RGB+Normal", (98.9, 99.5, 99.7, 97.0, 100.0, 98.8, 99.6, 98.3, 100.0, 91.7), 98.4),
    ),
    "p_auroc": (
        PublishedRow("BTF", "RGB+PC", (99.6, 99.2, 99.7, 99.4, 98.1, 97.4, 99.6, 99.8, 99.4, 99.5), 99.2),
        PublishedRow("M3DM", "RGB+PC", (99.5, 99.3, 99.7, 98.5, 98.5, 98.4, 99.6, 99.4, 99.7, 99.6), 99.2),
        PublishedRow("CFM", "RGB+PC", (99.7, 99.2, 99.9, 97.2, 98.7, 99.3, 99.8, 99.9, 99.8, 99.8), 99.3),
        PublishedRow("AST", "RGB+D", (), 97.6),  # mean only
        PublishedRow("MMRD", "RGB+D", (), 99.2),  # mean only
        PublishedRow("TRD", "RGB+Depth", (99.3, 99.3, 99.8, 99.3, 99.7, 97.4, 99.8, 99.9, 99.7, 99.5), 99.4),
        PublishedRow("TRD", "RGB+Normal", (99.3, 99.6, 99.8, 99.2, 99.7, 99.8, 99.8, 99.8, 99.7, 99.7), 99.6),
    ),
    "aupro@0.3": (
        PublishedRow("BTF", "RGB+PC", (97.6, 96.9, 97.9, 97.3, 93.3, 88.8, 97.5, 98.1, 95.0, 97.1), 95.9),
        PublishedRow("M3DM", "RGB+PC", (97.0, 97.1, 97.9, 95.0, 94.1, 93.2, 97.7, 97.1, 97.1, 97.5), 96.4),
        PublishedRow("Shape-guided", "RGB+PC", (98.1, 97.3, 98.2, 97.1, 96.2, 97.8, 98.1, 98.3, 97.4, 97.5), 97.6),
        PublishedRow("AST", "RGB+D", (97.0, 94.7, 98.1, 93.9, 91.3, 90.6, 97.9, 98.2, 88.9, 94.0), 94.4),
        PublishedRow("MMRD", "RGB+D", (98.6, 99.0, 99.1, 95.1, 99.0, 90.1, 99.0, 99.0, 98.7, 98.2), 97.6),
        PublishedRow("CFM", "RGB+PC", (98.0, 96.6, 98.2, 94.7, 95.9, 96.7, 98.2, 98.3, 97.6, 98.2), 97.2),
        PublishedRow("TRD", "RGB+Depth", (97.5, 97.4, 98.1, 97.3, 97.9, 90.2, 98.2, 98.3, 97.6, 96.8), 96.9),
        PublishedRow("TRD", "RGB+Normal", (97.5, 98.0, 98.2, 97.1, 98.1, 98.2, 98.2, 98.3, 97.8, 97.9), 97.9),
    ),
}


def published_trd(metric: str, modality: str) -> PublishedRow:
    """The published TRD row of ``metric`` (a METRIC_KEYS key) for ``modality`` ("normals"/"depth")."""
    if metric not in METRIC_KEYS:
        raise ValueError(f"unknown metric {metric!r}; published tables exist for {sorted(METRIC_KEYS)}")
    if modality not in MODALITY_ROWS:
        raise ValueError(f"unknown 3D modality {modality!r}; expected one of {sorted(MODALITY_ROWS)}")
    return next(r for r in PUBLISHED[metric] if r.method == "TRD" and r.modality == MODALITY_ROWS[modality])


def _our_values(ours: Mapping[str, Mapping[str, float]], metric: str) -> dict[str, float]:
    """Our values in percent for the MVTec categories that have a finite ``metric``."""
    values = {}
    for cat in CATEGORIES:
        value = ours.get(cat, {}).get(metric)
        if value is None or not math.isfinite(float(value)):
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{cat} {metric} = {value}: expected a fraction in [0, 1], not percent")
        values[cat] = 100.0 * float(value)
    return values


def format_reproduction_table(ours: Mapping[str, Mapping[str, float]], metric: str, modality: str,
                              comparison: Comparison | None = None) -> str:
    """Markdown table: our per-category values next to the published TRD row of ``metric`` and the difference.

    ``ours`` maps category -> metric dict (values in [0, 1]). Our values are ``comparison.ours``
    (default: the key ``metric`` itself); rows of ``comparison.also`` follow for information.
    Categories without a finite value show "–"; if some are missing, our mean is taken over the
    present ones, compared with the published mean over the same categories, and marked with "*".
    Raises ValueError when none of the MVTec 3D-AD categories is present.

    Example:
        >>> table = format_reproduction_table({"bagel": {"aupro100@0.3": 0.97}}, "aupro@0.3", "normals",
        ...                                   COMPARISONS[2])
        >>> "ours (100-threshold curve)" in table
        True
    """
    comparison = comparison or Comparison(metric, metric)
    if comparison.published != metric:
        raise ValueError(f"comparison for {comparison.published!r} given for metric {metric!r}")
    published = published_trd(metric, modality)
    pub = published.by_category()
    mine = _our_values(ours, comparison.ours)
    if not mine:
        raise ValueError(f"no MVTec 3D-AD category with a finite {comparison.ours!r} in {sorted(ours)}")
    partial = len(mine) < len(CATEGORIES)
    our_mean = sum(mine.values()) / len(mine)
    pub_mean = sum(pub[c] for c in mine) / len(mine) if partial else published.mean
    mark = "*" if partial else ""

    def cells(values: Mapping[str, float], signed: bool = False) -> list[str]:
        fmt = "{:+.1f}" if signed else "{:.1f}"
        return [fmt.format(values[c]) if c in values else "–" for c in CATEGORIES]

    diff = {c: mine[c] - pub[c] for c in mine}
    rows = [
        [comparison.label, published.modality, *cells(mine), f"{our_mean:.1f}{mark}"],
        [f"{published.method} (published)", published.modality, *cells(pub), f"{published.mean:.1f}"],
        ["difference", "", *cells(diff, signed=True), f"{our_mean - pub_mean:+.1f}{mark}"],
    ]
    for label, key in comparison.also:
        extra = _our_values(ours, key)
        mean = f"{sum(extra.values()) / len(extra):.1f}{'*' if len(extra) < len(CATEGORIES) else ''}" if extra else "–"
        rows.append([label, published.modality, *cells(extra), mean])
    lines = [
        f"**{METRIC_KEYS[metric]} (%)**, MVTec 3D-AD, {published.name}",
        "",
        "| method | modal. | " + " | ".join(CATEGORIES) + " | mean |",
        "|" + "---|" * (len(CATEGORIES) + 3),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    if partial:
        lines += [
            "",
            f"\\* mean over the {len(mine)} of {len(CATEGORIES)} categories present ({', '.join(mine)}); "
            f"the difference is taken against the published mean over the same categories ({pub_mean:.2f}).",
        ]
    if comparison.note:
        lines += ["", comparison.note]
    return "\n".join(lines) + "\n"
