"""``trd demo``: synthetic data -> fit -> test -> report per category and variant, on a small model."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..config import load_config
from ..data.synth import SYNTH_CATEGORIES, generate
from ..errors import TRDError
from ..model.backbone import build_teacher
from .evaluate import evaluate, summary_line
from .fit import fit

Log = Callable[[str], None]


DEMO_OVERRIDES = [
    "model.backbone=resnet18", "data.image_size=128", "train.epochs=20", "train.batch_size=8",
    "model.decoder_blocks=2,2,2", "model.bottleneck_blocks=1",
    # Scores from the object only (a documented departure, docs/METHOD_NOTES.md): on this small
    # model the students' errors at the image border otherwise hold many images' maximum.
    "score.foreground_only=true",
]


def demo(out: str | Path, backbone_weights: str | None = None, variants: list[str] | None = None,
         log: Log = print, overrides: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Synthetic data -> fit -> test -> report per category and variant, on a small model.

    Args:
        out: the demo folder: ``data/`` (synthetic dataset), ``<category>/<variant>/`` (run folders
            with ``report.html``), ``summary.md``.
        backbone_weights: teacher weights; default: ImageNet if torchvision can get them, else
            random teachers (with a warning: lower quality).
        variants: model variants to compare (`trd.model.VARIANTS`); default ``["trd"]``.
        log: where progress lines go.
        overrides: extra ``section.key=value`` settings applied after the demo's own.

    Returns:
        ``{category: {variant: result}}`` (results as `evaluate` returns them); ``out/summary.md``
        compares the variants per defect type (colour-only, geometry-only, both).

    Example:
        >>> from trd import api
        >>> results = api.demo("runs/demo")  # doctest: +SKIP
        >>> sorted(results)  # doctest: +SKIP
        ['puck', 'tile']
    """
    out = Path(out)
    started = time.perf_counter()
    weights = backbone_weights or _demo_weights(log)
    log(f"demo: synthetic data -> {out / 'data'}")
    generate(out / "data", size=128)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for category in SYNTH_CATEGORIES:
        for variant in variants or ["trd"]:
            cfg = load_config(None, [*DEMO_OVERRIDES, f"data.root={out / 'data'}", f"data.category={category}",
                                     f"data.cache_dir={out / 'cache'}", f"model.weights={weights}",
                                     f"model.variant={variant}", *(overrides or [])])
            run = out / category / variant
            log(f"demo: training '{category}' with {variant} ({cfg.model.backbone}, {cfg.data.image_size}px, "
                f"{cfg.train.epochs} epochs)")
            model_path = fit(cfg, run, log=log, progress=False)
            if model_path is None:  # a non-zero torchrun rank
                continue
            result = evaluate(model_path)
            results.setdefault(category, {})[variant] = result
            log(f"demo: {category}/{variant}: {summary_line(result)}   report: {run / 'report.html'}")
    if not results:
        return results
    table = demo_table(results) + "\n\nEach branch alone (its own z-scored map; the fused score adds them):\n\n" + branch_table(results)
    note = "ImageNet" if weights == "imagenet" else f"{weights!r} (NOT ImageNet: lower quality)"
    text = (f"# Demo on synthetic data\n\nTeachers: {note}. Settings: {' '.join([*DEMO_OVERRIDES, *(overrides or [])])}"
            " (score.foreground_only=false gives the paper's all-pixel scoring).\n\n" f"{table}\n")
    atomic_write_text(out / "summary.md", text)
    log(table)
    log(f"demo: done in {time.perf_counter() - started:.0f} s; summary {out / 'summary.md'}")
    return results


def _defect_types(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every defect type in any category's and variant's results, sorted."""
    return sorted({d for per in results.values() for r in per.values() for d in r.get("per_defect", {})})


def branch_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: I-AUROC of each branch alone per defect type (which modality finds which defect)."""
    defects = _defect_types(results)
    head = ["category", "variant", "branch", *[f"I-AUROC {d}" for d in defects]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for category, per in results.items():
        for variant, r in per.items():
            for branch, by_defect in r.get("branch_i_auroc_per_defect", {}).items():
                cells = [f"{by_defect.get(d, math.nan):.3f}" for d in defects]
                lines.append("| " + " | ".join([category, variant, branch, *cells]) + " |")
    return "\n".join(lines)


def demo_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: one row per category and variant; I-AUROC per defect type, then the overall metrics."""
    defects = _defect_types(results)
    head = ["category", "variant", *[f"I-AUROC {d}" for d in defects], "I-AUROC", "P-AUROC", "AUPRO@30%"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for category, per in results.items():
        for variant, r in per.items():
            cells = [r["per_defect"].get(d, {}).get("i_auroc", math.nan) for d in defects]
            cells += [r["overall"].get(k, math.nan) for k in ("i_auroc", "p_auroc", "aupro@0.3")]
            lines.append("| " + " | ".join([category, variant, *(f"{v:.3f}" for v in cells)]) + " |")
    return "\n".join(lines)


def _demo_weights(log: Log) -> str:
    """ImageNet teachers if torchvision can provide them (cache or download), else random ones."""
    try:
        build_teacher("resnet18", "imagenet")
        return "imagenet"
    except TRDError as exc:
        log(f"demo: ImageNet weights unavailable ({exc}); using RANDOM teachers - detection quality will be lower")
        warnings.warn("demo runs with randomly initialised teachers", UserWarning, stacklevel=2)
        return "none"
