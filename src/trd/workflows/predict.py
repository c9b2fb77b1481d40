"""``trd predict``: score new RGB + XYZ pairs, streaming, with bad samples reported and skipped.

Writes ``heatmaps/<name>.png`` (overlay on the RGB image), ``masks/<name>.png`` (pixels above the
validation pixel threshold) and one JSON line per sample in ``predictions.jsonl``. Memory does not
grow with the number of samples: each batch is written and dropped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..atomic import atomic_open, atomic_write_bytes
from ..config import Config
from ..detector import load_detector, require_good_inputs
from ..data.dataset import PairDataset, build_cache
from ..data.samples import Sample
from ..data.transforms import denormalise
from ..errors import ConfigError, DataError
from ..reporting.figures import save_heatmap_png
from ..scoring.infer import Runner, iterate_outputs
from ..scoring.threshold import Thresholds
from ..training.runtime import resolve_device

RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
XYZ_SUFFIXES = (".tiff", ".tif")


def _pair(rgb: Path, xyz: Path) -> Sample:
    return Sample(rgb=rgb, xyz=xyz, mask=None, label=0, defect="unknown", category="", split="predict",
                  xyz_kind="xyz_tiff")


def _by_stem(folder: Path, suffixes: tuple[str, ...], what: str) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Files of ``folder`` by stem, and (file, problem) for a second file with the same stem.

    Hidden files (``.name``, e.g. macOS ``._001.png`` resource forks) and folders are ignored, as
    when listing a dataset.
    """
    found: dict[str, Path] = {}
    problems: list[tuple[str, str]] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in suffixes or not p.is_file():
            continue
        if p.stem in found:
            problems.append((str(p), f"two {what} named {p.stem}: {found[p.stem].name} is scored, this one is not"))
        else:
            found[p.stem] = p
    return found, problems


def collect_inputs(input_dir: Path | None, rgb: Path | None, xyz: Path | None) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples to score and (name, problem) for files that cannot be paired."""
    if (input_dir is None) == (rgb is None):
        raise DataError(input_dir or rgb or Path("."), "give either --input FOLDER or --rgb FILE --xyz FILE")
    if rgb is not None:
        if xyz is None:
            raise DataError(rgb, "--rgb needs --xyz (the matching XYZ TIFF)")
        for path in (rgb, xyz):
            if not path.is_file():
                raise DataError(path, "file not found")
        return [_pair(rgb, xyz)], []
    rgb_dir, xyz_dir = input_dir / "rgb", input_dir / "xyz"
    for folder in (rgb_dir, xyz_dir):
        if not folder.is_dir():
            raise DataError(folder, "missing: --input expects a folder with rgb/ and xyz/ subfolders")
    rgbs, problems = _by_stem(rgb_dir, RGB_SUFFIXES, "RGB images")
    xyzs, more = _by_stem(xyz_dir, XYZ_SUFFIXES, "XYZ TIFFs")
    problems += more
    problems += [(str(rgbs[s]), "no XYZ TIFF with this name in xyz/") for s in sorted(set(rgbs) - set(xyzs))]
    problems += [(str(xyzs[s]), "no RGB image with this name in rgb/") for s in sorted(set(xyzs) - set(rgbs))]
    samples = [_pair(rgbs[s], xyzs[s]) for s in sorted(set(rgbs) & set(xyzs))]
    if not samples:
        raise DataError(input_dir, "no RGB/XYZ pairs found (files are paired by name, e.g. rgb/001.png + xyz/001.tiff)")
    return samples, problems


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


def predict_samples(run: Runner, samples: list[Sample], cfg: Config, thresholds: Thresholds, out_dir: Path,
                    device: torch.device, batch_size: int = 8, unpaired: list[tuple[str, str]] = ()) -> dict[str, Any]:
    """Score ``samples`` with ``run`` and write heatmaps, masks and predictions.jsonl under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = PairDataset(samples, cfg.data, build_cache(cfg.data))
    failed = [{"file": f, "error": e} for f, e in unpaired]
    vmax = max(thresholds.pixel * 2.0, 1.0)
    n_scored = n_anomalous = 0
    with atomic_open(out_dir / "predictions.jsonl", "w") as jsonl:
        for batch, out in iterate_outputs(run, dataset, device, batch_size, skip_bad=True):
            failed += [{"file": str(samples[i].rgb), "error": msg} for i, msg in batch["errors"]]
            if not out:
                continue
            maps = out["anomaly_map"].float().cpu().numpy()[:, 0]
            scores = out["score"].float().cpu().numpy()
            shares = {k[len("share_"):]: v.float().cpu().numpy() for k, v in out.items() if k.startswith("share_")}
            explained = {k[len("attribution_"):]: v.float().cpu().numpy() for k, v in out.items()
                         if k.startswith("attribution_")}
            for j, index in enumerate(batch["index"].tolist()):
                sample = samples[index]
                name = sample.rgb.stem
                rgb = denormalise(batch["rgb"][j].numpy())
                heat = out_dir / "heatmaps" / f"{name}.png"
                save_heatmap_png(heat, rgb, maps[j], 0.0, vmax)
                atomic_write_bytes(out_dir / "masks" / f"{name}.png", _png(maps[j] > thresholds.pixel))
                anomalous = bool(scores[j] > thresholds.image)
                n_scored += 1
                n_anomalous += anomalous
                record = {"name": name, "rgb": str(sample.rgb), "xyz": str(sample.xyz), "score": float(scores[j]),
                          "anomalous": anomalous, "image_threshold": thresholds.image,
                          "branch_shares": {k: float(v[j]) for k, v in shares.items()},
                          "heatmap": str(heat.relative_to(out_dir)), "mask": f"masks/{name}.png"}
                if explained:
                    record["modality_attribution"] = {k: float(v[j]) for k, v in explained.items()}
                jsonl.write(json.dumps(record) + "\n")
    return {"scored": n_scored, "anomalous": n_anomalous, "failed": failed,
            "predictions": str(out_dir / "predictions.jsonl")}


def predict(model_path: str | Path | None, out_dir: str | Path, *, input_dir: Path | None = None,
            rgb: Path | None = None, xyz: Path | None = None, onnx_path: Path | None = None,
            batch_size: int = 8, device: str = "auto", explain: bool = False) -> dict[str, Any]:
    """Score unlabelled pairs with a checkpoint or an exported ONNX file; bad samples are skipped.

    Args:
        model_path: a ``model.pt`` (exactly one of ``model_path`` and ``onnx_path``).
        out_dir: receives ``predictions.jsonl``, ``heatmaps/`` and ``masks/``.
        input_dir: a folder with ``rgb/`` and ``xyz/`` subfolders, files paired by name; or
        rgb, xyz: one RGB image and its XYZ TIFF.
        onnx_path: an ONNX file written by `trd.api.export`, run by onnxruntime.
        batch_size: pairs scored together.
        device: "auto", "cpu", "cuda" or "cuda:N" (the ONNX path picks its own provider).
        explain: add ``modality_attribution`` to each record (`trd.detector.Detector.explain`;
            three model passes per sample; needs ``model_path``).

    Returns:
        ``{"scored": n, "anomalous": n, "failed": [{"file", "error"}, ...], "predictions": path}``.

    Example:
        >>> from trd import api
        >>> api.predict("runs/puck/model.pt", "preds", input_dir=Path("line_scans"))  # doctest: +SKIP
        {'scored': 60, 'anomalous': 3, 'failed': [], 'predictions': 'preds/predictions.jsonl'}
    """
    if (model_path is None) == (onnx_path is None):
        raise ConfigError("give exactly one of --model (model.pt) or --onnx (exported file)")
    if explain and onnx_path is not None:
        raise ConfigError("--explain needs --model (model.pt holds the good inputs it needs; an ONNX file does not)")
    samples, unpaired = collect_inputs(input_dir, rgb, xyz)
    if onnx_path is not None:
        from ..export.onnx import load_onnx_runner

        run, cfg, thresholds = load_onnx_runner(Path(onnx_path))
        dev = resolve_device("cpu")
    else:
        dev = resolve_device(device)
        detector, cfg, thresholds, _ = load_detector(Path(model_path), dev)
        if explain:
            require_good_inputs(detector, model_path)
        run = detector.explain if explain else detector
    return predict_samples(run, samples, cfg, thresholds, Path(out_dir), dev, batch_size, unpaired)
