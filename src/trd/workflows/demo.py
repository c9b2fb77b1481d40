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
from ..reporting.sections import teacher_banner
from ..scoring.border import BorderCheck
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
    if weights == "none":  # said once here; the per-teacher warnings of every fit are silenced below
        warnings.warn("the demo runs with randomly initialised teachers: its scores mean little", UserWarning,
                      stacklevel=2)
    log(f"demo: synthetic data -> {out / 'data'}")
    generate(out / "data", size=128)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
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
                result = evaluate(model_path, explain=True, log=log)
                results.setdefault(category, {})[variant] = result
                log(f"demo: {category}/{variant}: {summary_line(result)}   report: {run / 'report.html'}")
    if not results:
        return results
    settings = " ".join([*DEMO_OVERRIDES, *(overrides or [])])
    text = demo_summary(results, weights, settings)
    atomic_write_text(out / "summary.md", text)
    log(text)
    log(f"demo: done in {time.perf_counter() - started:.0f} s; summary {out / 'summary.md'}")
    return results


def demo_summary(results: dict[str, dict[str, dict[str, Any]]], weights: str, settings: str) -> str:
    """The Markdown of ``summary.md``: banner, detection tables, decisions, attribution, border check."""
    banner = teacher_banner({"model": {"weights": weights}})
    note = "ImageNet" if weights == "imagenet" else f"{weights!r} (NOT ImageNet)"
    parts = ["# Demo on synthetic data", ""]
    parts += [f"> **WARNING: {banner}**", ""] if banner else []
    parts += [f"Teachers: {note}. Settings: {settings} (score.foreground_only=false gives the paper's all-pixel "
              "scoring).", "", "## Detection: I-AUROC per defect type", "", demo_table(results), "",
              "## I-AUROC per defect type, each branch alone", "",
              "Each branch's own z-scored map (the fused score adds them):", "", branch_table(results), "",
              "## Decisions at the deployment thresholds", "", decisions_table(results), ""]
    for category, per in results.items():
        for variant, r in per.items():
            parts += [f"- {category}/{variant}: {line}" for line in r["operating_point"]["statements"]
                      if not line.startswith("  ")]
    parts += ["", "## Modality attribution per defect type", "",
              "Measured (`trd test --explain`): how much the image score drops when one input is made nominal where the "
              "score comes from (around the fused map's maximum it is replaced by matching content of a good validation "
              "input). Defect types count the images whose maximum lies on the defect.", "",
              attribution_table(results), "",
              "## Where the image maxima sit (border check)", ""]
    for category, per in results.items():
        for variant, r in per.items():
            check = r["border_check"]["validation"]
            if check is not None:
                parts.append(f"- {category}/{variant}: {BorderCheck.from_dict(check).finding('validation')}"
                             + (" (suspicious)" if check["suspicious"] else ""))
    return "\n".join(parts) + "\n"


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


def _pct(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.3g} %"


def decisions_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per run, the image threshold's promise beside the realised test rate and recall."""
    defects = _defect_types(results)
    head = ["category", "variant", "image threshold", "promised false-alarm rate", "false alarms on test (95 % range)",
            *[f"defects found {d}" for d in defects]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for category, per in results.items():
        for variant, r in per.items():
            image = r["operating_point"]["image"]
            fp = image["false_positives"]
            n = image["n_validation"]
            promised = "unknown" if image["guaranteed_fpr"] is None else (
                f"<= {_pct(image['guaranteed_fpr'])} on average, <= {_pct(image['fpr_bound_90'])} with 90 % confidence "
                f"(n = {n})")
            realised = f"{fp['count']}/{fp['of']} = {_pct(fp['rate'])} ({_pct(fp['ci95'][0])} to {_pct(fp['ci95'][1])})"
            recalls = [image["recall"].get(d) for d in defects]
            cells = [f"{x['count']}/{x['of']}" if x else "–" for x in recalls]
            lines.append("| " + " | ".join([category, variant, f"{image['threshold']:.3f}", promised, realised, *cells]) + " |")
    return "\n".join(lines)


def attribution_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: per run and defect type, the mean score drops and the images attributed to each modality."""
    head = ["category", "variant", "defect type", "images", "maximum on the defect", "mean drop colour",
            "mean drop geometry", "mainly colour", "mainly geometry", "neither"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for category, per in results.items():
        for variant, r in per.items():
            for defect, a in r.get("modality_attribution", {}).items():
                on = "–" if a["peak_on_defect"] is None else str(a["peak_on_defect"])
                drops = [f"{a[k]:+.2f}" if math.isfinite(a[k]) else "–" for k in ("mean_drop_colour", "mean_drop_geometry")]
                lines.append("| " + " | ".join([category, variant, defect, str(a["images"]), on, *drops,
                                                str(a["mainly_colour"]), str(a["mainly_geometry"]),
                                                str(a["mainly_neither"])]) + " |")
    return "\n".join(lines)


def _demo_weights(log: Log) -> str:
    """ImageNet teachers if torchvision can provide them (cache or download), else random ones."""
    try:
        build_teacher("resnet18", "imagenet")
        return "imagenet"
    except TRDError as exc:
        log(f"demo: ImageNet weights unavailable ({exc}); using RANDOM teachers - detection quality will be lower")
        return "none"
