"""``trd reproduce``: the paper protocol on MVTec 3D-AD categories, as a job you can leave running.

In order: list every category's samples (a missing one stops the job before anything runs), say
what is finished and what resumes, time a warm-up and print the time and disk estimate
(`trd.workflows.estimate`), then per category: train (`fit`, which resumes from ``state.pt``),
evaluate (AU-PRO with both curves) and rewrite ``OUT/reproduction.md`` and
``OUT/reproduction.json``, so a partial run is still a result. Run the same command again after an
interruption: finished categories are skipped, the one in progress resumes at its last train state.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..checkpoint import load_checkpoint
from ..config import Config, resume_differences
from ..data.samples import MVTEC3D_CATEGORIES, split_samples
from ..errors import ConfigError
from ..reporting.paper import COMPARISONS, format_reproduction_table
from ..training.device import resolve_device
from .estimate import CategoryWork, describe, estimate, warm_up
from .evaluate import evaluate, summary_line
from .fit import fit

Log = Callable[[str], None]
PROGRESS = "reproduction.json"


def _load_progress(out: Path, cfg: Config) -> dict[str, dict[str, float]]:
    """Results of the categories finished by an earlier run of this job, else {}; ConfigError when
    that run had settings that change results (`trd.config.resume_differences`, scoring included)."""
    path = out / PROGRESS
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        results = saved["results"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a reproduction progress file ({type(exc).__name__}); "
                          "use another --out or remove it") from None
    changed = resume_differences(saved["config"], cfg, scoring=True, ignore=frozenset({"data.category"}))
    if changed:
        detail = "; ".join(changed[:5])
        raise ConfigError(f"{path}: this folder holds a reproduction with other settings ({detail}); "
                          "use another --out, or the same settings")
    return {cat: {k: math.nan if v is None else v for k, v in metrics.items()} for cat, metrics in results.items()}


def _work(cfg: Config, out: Path, categories: list[str], finished: Mapping[str, Any]) -> list[CategoryWork]:
    """Sample counts and what is left per category (reads only the small entries of a train state)."""
    work = []
    for category in categories:
        c = _category_config(cfg, category)
        n = [len(split_samples(c.data, split)) for split in ("train", "validation", "test")]
        run = out / category
        if category in finished:
            left = 0
        elif (run / "state.pt").is_file():
            left = max(cfg.train.epochs - int(load_checkpoint(run / "state.pt", "train_state", mmap=True)["epoch"]), 0)
        else:
            left = 0 if (run / "model.pt").is_file() else cfg.train.epochs
        work.append(CategoryWork(category, *n, epochs_left=left, done=category in finished))
    return work


def _category_config(cfg: Config, category: str) -> Config:
    c = copy.deepcopy(cfg)
    c.data.category = category
    return c


def _tables(results: Mapping[str, Mapping[str, float]], cfg: Config, categories: list[str]) -> str:
    done = [c for c in categories if c in results]
    todo = [c for c in categories if c not in results]
    head = (f"# Reproduction on MVTec 3D-AD ({cfg.data.modality_3d})\n\n"
            f"Categories finished: {len(done)} of {len(categories)}"
            + (f"; still to run: {', '.join(todo)}" if todo else "") + ".\n\n")
    tables = [format_reproduction_table(results, c.published, cfg.data.modality_3d, c) for c in COMPARISONS]
    return head + "\n\n".join(tables) + "\n"


def _save_progress(out: Path, cfg: Config, results: Mapping[str, Mapping[str, float]], categories: list[str]) -> str:
    """Rewrite reproduction.json (settings + results) and reproduction.md (the tables); returns the tables."""
    clean = {cat: {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in m.items()}
             for cat, m in results.items()}
    blob = {"config": _category_config(cfg, "").to_dict(), "results": clean}
    atomic_write_text(out / PROGRESS, json.dumps(blob, indent=2, allow_nan=False) + "\n")
    text = _tables(results, cfg, categories)
    atomic_write_text(out / "reproduction.md", text)
    return text


def reproduce(cfg: Config, out: str | Path, categories: list[str] | None = None, *, dry_run: bool = False,
              log: Log = print) -> str:
    """Train and test MVTec 3D-AD categories with ``cfg``; ``out/reproduction.md`` after each one.

    Args:
        cfg: the run configuration (defaults: the paper protocol); ``cfg.data.root`` is the
            MVTec 3D-AD root, ``cfg.data.category`` is set per category.
        out: the folder that receives one run folder per category, ``reproduction.md`` (the tables
            against the published numbers) and ``reproduction.json`` (settings and results, which
            a rerun uses to skip finished categories).
        categories: a subset of the ten categories (default: all, in the paper's order).
        dry_run: print the plan and the estimate only; train nothing.
        log: where progress lines go.

    Returns:
        The Markdown text of the tables (our numbers, the published TRD row and the difference);
        with ``dry_run`` the plan; "" in the non-zero ranks of a ``torchrun`` job.

    Example:
        >>> from trd import api
        >>> from trd.config import load_config
        >>> api.reproduce(load_config(None, ["data.root=/data/mvtec3d"]), "runs/paper")  # doctest: +SKIP
    """
    out = Path(out)
    categories = list(categories or MVTEC3D_CATEGORIES)
    unknown = [c for c in categories if c not in MVTEC3D_CATEGORIES]
    if unknown:  # the tables compare with the paper's numbers per category: refused before any work
        raise ConfigError(f"--categories: {', '.join(unknown)} is not an MVTec 3D-AD category (known: "
                          f"{', '.join(MVTEC3D_CATEGORIES)}); train your own data with trd fit")
    results = _load_progress(out, cfg)
    work = _work(cfg, out, categories, results)
    device = resolve_device(cfg.train.device)
    left = [c for c in work if not c.done]
    main = int(os.environ.get("RANK", "0")) == 0
    warmup = est = None
    if left and main and int(os.environ.get("WORLD_SIZE", "1")) == 1:  # under torchrun: no single-process estimate
        first = _category_config(cfg, left[0].name)
        warmup = warm_up(first, device, split_samples(first.data, "train")[0], out)
        est = estimate(work, cfg, warmup)
    plan = describe(work, cfg, device, warmup, est, out)
    if main:
        log(plan)
    if dry_run:
        return plan
    text = _tables(results, cfg, categories) if results else ""
    for i, category in enumerate(categories, 1):
        if category in results:
            log(f"== {category} ({i}/{len(categories)}): finished, skipped")
            continue
        c = _category_config(cfg, category)
        log(f"== {category} ({i}/{len(categories)}): sobel_k={c.data.sobel_for(category)}")
        model_path = fit(c, out / category, log=log)
        if model_path is None:  # a non-zero torchrun rank: rank 0 evaluates and writes
            continue
        results[category] = evaluate(model_path, out_dir=out / category, pro_method="both", log=log)["overall"]
        text = _save_progress(out, cfg, results, categories)
        log(f"{category}: {summary_line({'overall': results[category]})}  (tables: {out / 'reproduction.md'})")
    return text
