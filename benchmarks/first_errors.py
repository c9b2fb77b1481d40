"""How long simple mistakes take to report (issue 19 item 5): this checkout against a baseline source
tree, interleaved in one run.

    .venv/bin/python benchmarks/first_errors.py --baseline-src /path/to/older/src --runs 3

Each case is a fresh ``python -m trd.cli`` process that must stop with exit code 2 and one
``error:`` line: a wrong --data folder, a wrong --category, a missing --model file, a bad --input
folder, an ONNX file given to --model, and a mistyped --set name. The wall time includes the
interpreter start. The two source trees alternate (same case, this checkout then the baseline), so
both see the same machine load; the load average before and after is printed beside the table.
``--cpus`` pins every process with ``taskset`` (default: no pinning).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def _cases(tmp: Path, data: Path, model: Path, onnx: Path) -> dict[str, list[str]]:
    return {
        "wrong --data": ["fit", "--data", str(tmp / "nowhere"), "--category", "puck", "--out", str(tmp / "r")],
        "wrong --category": ["fit", "--data", str(data), "--category", "puk", "--out", str(tmp / "r")],
        "missing --model file": ["test", "--model", str(tmp / "nope.pt")],
        "bad --input": ["predict", "--model", str(model), "--input", str(tmp / "nowhere"), "--out", str(tmp / "p")],
        "ONNX file as --model": ["predict", "--model", str(onnx), "--input", str(data), "--out", str(tmp / "p")],
        "mistyped --set": ["fit", "--set", "trian.epochs=1", "--out", str(tmp / "r")],
    }


def _time(src: Path, args: list[str], cpus: str | None) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "trd.cli", *args]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 2:
        raise SystemExit(f"{' '.join(args)} with {src}: exit {proc.returncode}\n{proc.stderr}")
    return wall, proc.stderr.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, required=True, help="src/ folder of the tree to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpus", default=None, help="taskset CPU list for every process, e.g. 1")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        env = {**os.environ, "PYTHONPATH": str(HERE), "PYTHONWARNINGS": "ignore"}
        trd = [sys.executable, "-m", "trd.cli"]
        subprocess.run([*trd, "synth", "--out", str(tmp / "data"), "--size", "32", "--categories", "puck",
                        "--n-train", "2", "--n-validation", "2", "--n-test-good", "1", "--n-test-per-defect", "1"],
                       check=True, env=env, capture_output=True)
        run = tmp / "run"
        subprocess.run([*trd, "fit", "--data", str(tmp / "data"), "--category", "puck", "--out", str(run), "--no-test",
                        "--backbone-weights", "none", "--set", "model.backbone=resnet18", "--set", "data.image_size=32",
                        "--set", "train.epochs=1", "--set", "model.decoder_blocks=1,1,1", "--set",
                        "model.bottleneck_blocks=1"], check=True, env=env, capture_output=True)
        subprocess.run([*trd, "export", "--model", str(run / "model.pt"), "--out", str(tmp / "m.onnx")], check=True,
                       env=env, capture_output=True)
        cases = _cases(tmp, tmp / "data", run / "model.pt", tmp / "m.onnx")
        load_before = os.getloadavg()
        times: dict[str, dict[str, list[float]]] = {case: {"this": [], "baseline": []} for case in cases}
        lines: dict[str, dict[str, str]] = {case: {} for case in cases}
        for _ in range(opts.runs):
            for case, args in cases.items():
                for tree, src in (("this", HERE), ("baseline", opts.baseline_src)):
                    wall, line = _time(src, args, opts.cpus)
                    times[case][tree].append(wall)
                    lines[case][tree] = line
        load_after = os.getloadavg()
    print(f"# first errors: median wall time of {opts.runs} fresh processes, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} CPUs{f', pinned to {opts.cpus}' if opts.cpus else ''}, "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("| case | this checkout (s) | baseline (s) |\n|---|---|---|")
    for case in cases:
        print(f"| {case} | {statistics.median(times[case]['this']):.2f} | "
              f"{statistics.median(times[case]['baseline']):.2f} |")
    for case in cases:
        print(f"\n{case}:\n  this:     {lines[case]['this']}\n  baseline: {lines[case]['baseline']}")


if __name__ == "__main__":
    main()
