"""Does modality attribution name the modality a defect is in? Measured on the demo's models.

The synthetic data has single-modality defects: ``color`` stains change only the RGB image,
``dent`` changes only the 3D scan, ``crack`` changes both. This script takes the models trained by
``trd demo --out DEMO``, renders a larger test split with the same seed (train and validation stay
byte-identical to the demo's, so the models fit it), and compares, per defect type, on the images
whose fused maximum lies on the defect (otherwise the score is not about the defect):

- measured modality attribution (`trd.detector.Detector.explain`): which modality's counterfactual
  lowers the score more;
- branch shares (each branch's blurred z-value at the maximum), which are not modality shares.

    .venv/bin/trd demo --out runs/demo
    .venv/bin/python benchmarks/attribution.py --demo runs/demo --n 30

Prints a Markdown table (see docs/METHOD_NOTES.md, "Additions").
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from trd.data.cache import build_cache
from trd.data.dataset import PairDataset
from trd.data.samples import split_samples
from trd.data.synth import DEFECT_TYPES, SYNTH_CATEGORIES, generate
from trd.detector import load_detector
from trd.evaluation.attribution import attribution_by_defect, peak_on_defect
from trd.detector.passes import iterate_outputs


def measure(model: Path, data: Path) -> list[str]:
    """Markdown rows for one category: per defect type, attribution counts and branch-share counts."""
    detector, cfg, _, _ = load_detector(model)
    cfg.data.root = str(data)
    dataset = PairDataset(split_samples(cfg.data, "test"), cfg.data, build_cache(cfg.data))
    n, size = len(dataset), cfg.data.image_size
    maps, gts = np.empty((n, size, size), np.float32), np.empty((n, size, size), bool)
    values = {k: np.empty(n) for k in ("attribution_colour", "attribution_geometry", "share_rgb", "share_geo")}
    for batch, out in iterate_outputs(detector.explain, dataset, torch.device("cpu"), 8):
        idx = batch["index"].numpy()
        maps[idx] = out["anomaly_map"][:, 0].numpy()
        gts[idx] = batch["mask"][:, 0].numpy() > 0.5
        for key, array in values.items():
            array[idx] = out[key].numpy()
    defects = np.array([s.defect for s in dataset.samples])
    on = peak_on_defect(maps, gts, int(round(cfg.score.sigma)))
    table = attribution_by_defect(defects, values["attribution_colour"], values["attribution_geometry"], on)
    rows = []
    for d in DEFECT_TYPES:
        used = (defects == d) & on
        rgb, geo = values["share_rgb"][used], values["share_geo"][used]
        pos = np.maximum(rgb, 0) / np.maximum(np.maximum(rgb, 0) + np.maximum(geo, 0), 1e-12)
        a = table[d]
        rows.append(f"| {cfg.data.category} | {d} | {int((defects == d).sum())} | {a['peak_on_defect']} | "
                    f"{a['mainly_colour']} / {a['mainly_geometry']} / {a['mainly_neither']} | "
                    f"{a['mean_drop_colour']:+.2f} / {a['mean_drop_geometry']:+.2f} | "
                    f"{int(np.sum(rgb > geo))} / {int(np.sum(geo >= rgb))} | "
                    f"{100 * pos.mean() if used.any() else float('nan'):.0f} % |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="the folder `trd demo --out` wrote")
    parser.add_argument("--n", type=int, default=30, help="test images per defect type (and good)")
    args = parser.parse_args()
    data = args.demo / f"attribution-data-{args.n}"
    generate(data, size=128, n_test_good=args.n, n_test_per_defect=args.n)  # the demo's seed and split sizes
    print("| category | defect | images | maximum on the defect | attribution: mainly colour / geometry / neither "
          "| mean drop colour / geometry | branch shares: rgb larger / geo larger | mean rgb share |")
    print("|---|---|---|---|---|---|---|---|")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="teacher .* randomly initialised")
        for category in SYNTH_CATEGORIES:
            for row in measure(args.demo / category / "trd" / "model.pt", data):
                print(row)


if __name__ == "__main__":
    main()
