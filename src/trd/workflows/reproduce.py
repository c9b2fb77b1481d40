"""``trd reproduce``: the paper protocol on every MVTec 3D-AD category, then our table beside the published one."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import Config
from ..data.samples import MVTEC3D_CATEGORIES
from ..reporting.paper import METRIC_KEYS, format_reproduction_table
from .evaluate import evaluate, summary_line
from .fit import fit

Log = Callable[[str], None]


def reproduce(cfg: Config, out: str | Path, categories: list[str] | None = None, log: Log = print) -> str:
    """Train and test every MVTec 3D-AD category with ``cfg``; write ``out/reproduction.md``.

    Args:
        cfg: the run configuration (defaults: the paper protocol); ``cfg.data.root`` is the
            MVTec 3D-AD root, ``cfg.data.category`` is set per category.
        out: the folder that receives one run folder per category and ``reproduction.md``.
        categories: a subset of the ten categories (default: all, in the paper's order).
        log: where progress lines go.

    Returns:
        The Markdown text of the tables (our numbers, the published TRD row and the difference),
        or "" in the non-zero ranks of a ``torchrun`` job.

    Example:
        >>> from trd import api
        >>> from trd.config import load_config
        >>> api.reproduce(load_config(None, ["data.root=/data/mvtec3d"]), "runs/paper")  # doctest: +SKIP
    """
    out = Path(out)
    results: dict[str, dict[str, float]] = {}
    for category in categories or list(MVTEC3D_CATEGORIES):
        c = copy.deepcopy(cfg)
        c.data.category = category
        log(f"== {category}: sobel_k={c.data.sobel_for(category)}")
        model_path = fit(c, out / category)
        if model_path is None:  # a non-zero torchrun rank: rank 0 evaluates and writes
            continue
        results[category] = evaluate(model_path, out_dir=out / category)["overall"]
        log(f"{category}: {summary_line({'overall': results[category]})}")
    if not results:
        return ""
    tables = [format_reproduction_table(results, key, cfg.data.modality_3d) for key in METRIC_KEYS]
    text = f"# Reproduction on MVTec 3D-AD ({cfg.data.modality_3d})\n\n" + "\n\n".join(tables) + "\n"
    atomic_write_text(out / "reproduction.md", text)
    return text
