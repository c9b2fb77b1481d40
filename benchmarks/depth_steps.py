"""What coarse depth steps do to the model's 3D input, and the rule that warns about them.

    .venv/bin/python benchmarks/depth_steps.py --out benchmarks/results-depth-steps.json

A synthetic scan (`trd.data.synth`, the puck, 256 px, 0.40 m away, ~0.4 mm per pixel) is rendered at
three levels of sensor noise on z, then stored as 16-bit depth counts of several step sizes. For each,
it prints the share of neighbouring valid pixels with the same count (the rule of
`trd.data.readers.depth_png.coarse_steps` warns from 0.5) and how much the steps change the model's
3D input (`preprocess_3d`, surface normals, mean absolute change on the object), against how much a
second draw of the sensor's own noise changes it (the baseline, measured in the same run). Where the
ratio nears 1 the steps add as much to the input as the sensor noise does.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

from trd.data import synth
from trd.data.geometry import preprocess_3d
from trd.data.readers.depth_png import COARSE_SHARE, coarse_steps, same_count_share

NOISES_M = (2e-5, 2e-4, 1e-3)
STEPS_M = (1e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    size, fx = args.size, args.size * 0.40 / 0.10  # the synthetic camera sees 0.1 m at 0.4 m
    rows_out = []
    print(f"{'noise mm':>8s} {'step mm':>8s} {'same count':>10s} {'warns':>6s} {'steps/noise':>12s}")
    for noise in NOISES_M:
        synth._Z_NOISE = noise  # the renderer's sensor noise (module constant), for this benchmark only
        _, xyz, _ = synth.render_sample(np.random.default_rng(1), size, "puck", "good")
        z = xyz[..., 2].astype(np.float64)
        valid = z > 0
        rows, cols = np.indices(z.shape)
        centre = size / 2 - 0.5

        def image(depth: np.ndarray) -> np.ndarray:
            cloud = np.stack([(cols - centre) * depth / fx, (rows - centre) * depth / fx, depth], axis=2)
            return preprocess_3d(cloud.astype(np.float32), size=size)

        exact = image(z)
        on_object = np.any(exact != 0, axis=0)
        redraw = np.where(valid, z + noise * np.random.default_rng(9).standard_normal(z.shape), 0.0)
        noise_effect = float(np.abs(image(redraw) - exact)[:, on_object].mean())
        for step in STEPS_M:
            counts = np.round(z / step).astype(np.uint16)
            effect = float(np.abs(image(counts * step) - exact)[:, on_object].mean())
            row = {"noise_mm": noise * 1e3, "step_mm": step * 1e3, "same_count_share": round(same_count_share(counts), 3),
                   "warns": bool(coarse_steps(counts, step)), "steps_over_noise": round(effect / noise_effect, 2)}
            rows_out.append(row)
            print(f"{row['noise_mm']:8.2f} {row['step_mm']:8.3f} {row['same_count_share']:10.2f} "
                  f"{'yes' if row['warns'] else 'no':>6s} {row['steps_over_noise']:12.2f}")
    if args.out is not None:
        args.out.write_text(json.dumps({"date": datetime.date.today().isoformat(), "size": size,
                                        "coarse_share": COARSE_SHARE, "rows": rows_out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
