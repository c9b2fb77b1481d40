"""Where users wait (issue 24): start-up, reading + preprocessing and a 20-scan predict, against a pinned older trd in one run.

    .venv/bin/python benchmarks/startup.py --out benchmarks/results-cpu-startup.json
    .venv/bin/python benchmarks/startup.py --models demo --repeat 1 --out /tmp/s.json   # quick (no paper model)

The baseline is the code of ``--baseline`` (a commit of this repository, by default the main branch
this work started from), unpacked with ``git archive`` into the work folder; each measurement runs
in a child process with ``PYTHONPATH`` pointing at the baseline's or this checkout's ``src/``, pinned
to ``--cpus`` (default CPU 0: one core), old and new alternating ``--repeat`` times. Every figure is
the median with its range; the 1-minute load average is recorded before and after each measurement
(other work on the machine slows both sides alike, but not by the same factor: compare the medians of
one run, and rerun on a quiet machine for figures to publish).

Inputs, made once in the work folder with this checkout's code (the baseline reads them alike):
20 synthetic ``puck`` scans of 800 x 800 (RGB PNG + XYZ TIFF); the demo-sized model (resnet18
teachers, 128 px) and, with ``--models demo,paper``, the paper-sized one (wide_resnet50_2, 256 px),
both with random teachers (speed does not depend on the weights), and an ONNX export of each.
Each side has its own copy of the models (its own cached export) and its own ``TRD_CACHE``.

- start-up: a fresh ``trd predict --model M.pt`` (or ``--onnx M.onnx``) process scoring one scan,
  its wall time minus the time its record says the scan took (``timings_ms.total``: reading,
  preprocessing, scoring, writing), after both sides have cached what they cache (export,
  optimised graph, model hash). What a module imported at its first use costs (scipy at the first
  defect region, the PNG encoder) counts as the scan's time there, so the whole run's wall time is
  reported too ("one scan, whole run");
- preprocessing: `trd.data.inputs.load_pair` (reading the RGB and XYZ files, the 3D preprocessing,
  the RGB resize) of each of the 20 scans in one process, CPU seconds per scan (median over scans);
  the outputs of both sides are compared byte for byte;
- predict: ``trd predict --model demo.pt --input <20 scans>`` end to end, wall seconds; the scores
  of both sides are compared. A trd with a result store (not the baseline) writes a fresh one in the
  output folder, as a line's store meets new scans; it is also measured with ``--store none``, the
  baseline's work.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from engines import child_result  # this folder: benchmarks/engines.py

ROOT = Path(__file__).resolve().parents[1]
#: main when this benchmark was written (before issue 24's changes).
BASELINE = "9e61d86d5385e9715b8d58b12cba057d9fdd1218"
SIDES = ("old", "new")
PREPROCESS = """
import hashlib, json, sys, time
from pathlib import Path
from trd.config import load_config
from trd.data.inputs import load_pair
from trd.data.samples import unlabelled_samples
spec = json.loads(sys.argv[1])
out = {}
for name, overrides in spec["configs"].items():
    cfg = load_config(None, overrides).data
    samples, _ = unlabelled_samples(cfg, Path(spec["input"]))
    load_pair(samples[0], cfg)  # warm-up
    cpu, wall, digest = [], [], hashlib.sha256()
    for sample in samples:
        c, w = time.process_time(), time.perf_counter()
        rgb, x3d, mask, hw = load_pair(sample, cfg)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        for array in (rgb, x3d, mask):
            digest.update(array.tobytes())
    out[name] = {"cpu_s": cpu, "wall_s": wall, "sha256": digest.hexdigest(), "n": len(samples)}
print("RESULT " + json.dumps(out))
"""


def _baseline_src(commit: str, work: Path) -> Path:
    """The ``src/`` folder of ``commit`` (unpacked once under ``work``)."""
    target = work / f"baseline-{commit[:12]}"
    if not (target / "src").is_dir():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "src"],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / "src"


def _env(src: Path, cache: Path) -> dict[str, str]:
    """A child's environment: ``src`` first on the path, its own trd cache, and compiled bytecode kept
    (in the cache folder, as a pip install keeps it; PYTHONDONTWRITEBYTECODE would recompile every
    module at every start)."""
    env = {**os.environ, "PYTHONPATH": str(src), "TRD_CACHE": str(cache / "trd"), "PYTHONWARNINGS": "ignore",
           "PYTHONPYCACHEPREFIX": str(cache / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _pinned(cpus: set[int]) -> Any:
    return lambda: os.sched_setaffinity(0, cpus)


def _run(cmd: list[str], env: dict[str, str], cpus: set[int]) -> dict[str, float]:
    """Run ``cmd`` pinned; its wall and CPU seconds (user + system) and the load around it."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=_pinned(cpus))
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{err.decode()[-3000:]}")
    return {"wall_s": wall, "load_before": load, "load_after": os.getloadavg()[0], "stdout": out.decode()}


def _predict(side: dict[str, Any], form: str, model: str, args: list[str], out: Path, cpus: set[int],
             store: str = "default") -> dict[str, Any]:
    """One ``trd predict`` run into a fresh ``out``. A trd with a result store uses its default one
    (beside the model; ``store="default"``), a fresh one in ``out`` (``"fresh"``: a line's store, to
    which every scan is new) or none (``"none"``)."""
    flag = ["--onnx", str(side["dir"] / f"{model}.onnx")] if form == "onnx" else ["--model", str(side["dir"] / f"{model}.pt")]
    if side["has_store"] and store != "default":
        flag += ["--store", str(out / "results.db") if store == "fresh" else "none"]
    shutil.rmtree(out, ignore_errors=True)
    got = _run([sys.executable, "-m", "trd.cli", "predict", *flag, *args, "--out", str(out)], side["env"], cpus)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    got.pop("stdout")
    got["scan_s"] = sum(r["timings_ms"]["total"] for r in records) / 1e3
    got["startup_s"] = got["wall_s"] - got["scan_s"]
    got["scores"] = [r["score"] for r in records]
    return got


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _setup(work: Path, models: list[str], commit: str) -> dict[str, dict[str, Any]]:
    """Data, models and exports in ``work``; each side's folder, environment and warmed caches."""
    new_env = _env(ROOT / "src", work / "new" / "cache")
    if not (work / "data").is_dir():
        child_result([sys.executable, "-c", "import sys; from pathlib import Path; from trd.data.synth import generate; "
                      "generate(Path(sys.argv[1]), ['puck'], size=800, n_train=1, n_validation=0, n_test_good=20, "
                      "n_test_per_defect=0); print('RESULT {}')", str(work / "data")], "making the scans", env=new_env)
    sides = {"old": {"src": _baseline_src(commit, work)}, "new": {"src": ROOT / "src"}}
    for name, side in sides.items():
        side["dir"] = work / name
        side["dir"].mkdir(exist_ok=True)
        side["env"] = _env(side["src"], side["dir"] / "cache")
        side["has_store"] = (side["src"] / "trd" / "store").is_dir()  # the result store came after the baseline
    # Each side writes its own model.pt (the same seed: the same weights) and export with its own code:
    # a newer trd writes settings an older one does not know. Thresholds as a line's would be: the
    # pixel threshold flags 1 % of the good scans' pixels, the image threshold none of them (random
    # teachers with fixed statistics would otherwise flag every pixel, and a scan's regions would be
    # its whole object: a case a calibrated model does not meet on good scans).
    make = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); from engines import _model_file; "
            "_model_file(sys.argv[1], Path(sys.argv[2]), (float(sys.argv[4]), float(sys.argv[5]))); "
            "print('RESULT {}')")
    here = str(Path(__file__).parent)
    probe = ("import sys, warnings; warnings.simplefilter('ignore'); from pathlib import Path; import numpy as np; "
             "sys.path.insert(0, sys.argv[3]); from engines import _model_file; "
             "from trd.workflows.engine import load_model; from trd.data.samples import unlabelled_samples; "
             "from trd.runtime.batches import load_batch; "
             "m = load_model(_model_file(sys.argv[1], Path(sys.argv[2])), engine='onnx', log=lambda _: None); "
             "s, _ = unlabelled_samples(m.config.data, Path(sys.argv[4])); "
             "b = load_batch(s, range(len(s)), m.config.data, reference=m.reference); out = m.engine(b.rgb, b.x3d); "
             "print('RESULT', {'image': float(out['score'].max()) * 1.01, "
             "'pixel': float(np.percentile(out['anomaly_map'], 99))}.__repr__().replace(\"'\", '\"'))")
    scans = work / "data" / "puck" / "test" / "good"
    for model in models:
        found = child_result([sys.executable, "-c", probe, model, str(work / "probe"), here, str(scans)],
                             f"choosing the {model} model's thresholds", env=new_env)
        for name, side in sides.items():
            pt, onnx = side["dir"] / f"{model}.pt", side["dir"] / f"{model}.onnx"
            if not pt.is_file():
                child_result([sys.executable, "-c", make, model, str(side["dir"]), here, str(found["image"]),
                              str(found["pixel"])], f"making the {model} model ({name})", env=side["env"])
            if not onnx.is_file():
                subprocess.run([sys.executable, "-m", "trd.cli", "export", "--model", str(pt), "--out", str(onnx)],
                               env=side["env"], check=True, capture_output=True)
    return sides


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="demo,paper", help="demo and/or paper (start-up is measured for each)")
    p.add_argument("--baseline", default=BASELINE, help="commit whose code is the baseline")
    p.add_argument("--cpus", default="0", help="CPUs every measured process is pinned to")
    p.add_argument("--repeat", type=int, default=3, help="rounds, old and new alternating")
    p.add_argument("--work", type=Path, default=None, help="keep inputs here between runs (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=Path("results-startup.json"))
    args = p.parse_args(argv)
    cpus = {int(c) for c in args.cpus.split(",")}
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="trd-startup-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = _measure(work, models, args.baseline, cpus, args.repeat)
    results.update(_machine(args, cpus))
    results["table"] = _table(results)
    args.out.write_text(json.dumps(results, indent=1))
    print(results["table"])


def _measure(work: Path, models: list[str], commit: str, cpus: set[int], repeat: int) -> dict[str, Any]:
    sides = _setup(work, models, commit)
    scans = work / "data" / "puck" / "test" / "good"
    one = ["--rgb", str(scans / "rgb" / "000.png"), "--xyz", str(scans / "xyz" / "000.tiff")]
    forms = [(m, f) for m in models for f in ("model.pt", "onnx")]
    for _ in range(2):  # warm-up: exports, saved graphs, hashes cached (a hash is trusted 2 s after a change)
        for side in sides.values():
            for model, form in forms:
                _predict(side, form, model, one, work / "warm", cpus)
        time.sleep(2.5)
    raw: dict[str, Any] = {"startup": {f"{m} {f}": {s: [] for s in SIDES} for m, f in forms},
                           "predict20": {s: [] for s in SIDES}, "predict20_no_store": {s: [] for s in SIDES},
                           "preprocess": {s: [] for s in SIDES}}
    spec = {"input": str(scans), "configs": {"demo (128 px)": ["model.backbone=resnet18", "data.image_size=128"],
                                             "paper (256 px)": []}}
    for round_ in range(repeat):
        for name in SIDES if round_ % 2 == 0 else SIDES[::-1]:
            side = sides[name]
            for model, form in forms:
                got = _predict(side, form, model, one, work / "out", cpus)
                raw["startup"][f"{model} {form}"][name].append(got)
                print(f"{name} start-up {model} {form}: {got['startup_s']:.2f} s", flush=True)
            got = _predict(side, "model.pt", "demo", ["--input", str(scans)], work / "out", cpus, store="fresh")
            raw["predict20"][name].append(got)
            print(f"{name} predict 20 scans: {got['wall_s']:.2f} s", flush=True)
            if side["has_store"]:
                got = _predict(side, "model.pt", "demo", ["--input", str(scans)], work / "out", cpus, store="none")
                raw["predict20_no_store"][name].append(got)
                print(f"{name} predict 20 scans, --store none: {got['wall_s']:.2f} s", flush=True)
            raw["preprocess"][name].append(child_result([sys.executable, "-c", PREPROCESS, json.dumps(spec)],
                                                        f"preprocessing ({name})", env=side["env"],
                                                        preexec_fn=_pinned(cpus)))
            print(f"{name} preprocessing: " + ", ".join(
                f"{k} {statistics.median(v['cpu_s']) * 1e3:.1f} ms" for k, v in raw["preprocess"][name][-1].items()),
                flush=True)
    return _results(raw)


def _results(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians and ranges per side, old/new ratios, and whether both sides computed the same."""
    out: dict[str, Any] = {"raw": raw, "startup": {}, "preprocess": {}}
    out["one_scan"] = {}
    for key, per in raw["startup"].items():
        row = {s: _summary([g["startup_s"] for g in per[s]]) for s in SIDES}
        row["ratio"] = row["old"]["median"] / row["new"]["median"]
        out["startup"][key] = row
        row = {s: _summary([g["wall_s"] for g in per[s]]) for s in SIDES}
        row["ratio"] = row["old"]["median"] / row["new"]["median"]
        out["one_scan"][key] = row
    row = {s: _summary([g["wall_s"] for g in raw["predict20"][s]]) for s in SIDES}
    row["ratio"] = row["old"]["median"] / row["new"]["median"]
    old_scores, new_scores = raw["predict20"]["old"][0]["scores"], raw["predict20"]["new"][0]["scores"]
    row["max_score_difference"] = max(abs(a - b) for a, b in zip(old_scores, new_scores, strict=True))
    out["predict20"] = row
    if raw["predict20_no_store"]["new"]:  # like for like: the old code kept no result store
        row = {"old": out["predict20"]["old"], "new": _summary([g["wall_s"] for g in raw["predict20_no_store"]["new"]])}
        row["ratio"] = row["old"]["median"] / row["new"]["median"]
        out["predict20_no_store"] = row
    for config in raw["preprocess"]["old"][0]:
        per = {s: [statistics.median(run[config]["cpu_s"]) for run in raw["preprocess"][s]] for s in SIDES}
        row = {s: _summary(per[s]) for s in SIDES}
        row["ratio"] = row["old"]["median"] / row["new"]["median"]
        row["identical"] = raw["preprocess"]["old"][0][config]["sha256"] == raw["preprocess"]["new"][0][config]["sha256"]
        out["preprocess"][config] = row
    loads = [g[k] for part in raw["startup"].values() for s in SIDES for g in part[s] for k in ("load_before", "load_after")]
    out["load_1min"] = _summary(loads)
    return out


def _machine(args: argparse.Namespace, cpus: set[int]) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    versions = subprocess.run([sys.executable, "-c", "import numpy, onnxruntime, torch; "
                               "print(numpy.__version__, onnxruntime.__version__, torch.__version__)"],
                              capture_output=True, text=True).stdout.split()
    return {"date": datetime.date.today().isoformat(), "machine": f"{model}, {os.cpu_count()} CPUs",
            "pinned_cpus": sorted(cpus), "baseline": args.baseline, "python": platform.python_version(),
            "numpy_onnxruntime_torch": versions,
            "new_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                         text=True).stdout.strip()}


def _cell(row: dict[str, Any], unit: float = 1.0, fmt: str = "{:.2f}") -> str:
    return " | ".join(f"{fmt.format(row[s]['median'] * unit)} ({fmt.format(row[s]['min'] * unit)}-"
                      f"{fmt.format(row[s]['max'] * unit)})" for s in SIDES)


def _table(results: dict[str, Any]) -> str:
    rows = ["| what | old / new | old: median (range) | new: median (range) |", "|---|---|---|---|"]
    for key, row in results["startup"].items():
        rows.append(f"| start-up, `trd predict` {key} (s) | **{row['ratio']:.2f}x** | {_cell(row)} |")
    for key, row in results.get("one_scan", {}).items():  # start-up as measured lets lazy imports count as scan time
        rows.append(f"| `trd predict` {key}, one scan, whole run (s) | **{row['ratio']:.2f}x** | {_cell(row)} |")
    for key, row in results["preprocess"].items():
        same = "identical outputs" if row["identical"] else "OUTPUTS DIFFER"
        rows.append(f"| reading + preprocessing per 800x800 scan, {key} (CPU ms; {same}) | **{row['ratio']:.2f}x** | "
                    f"{_cell(row, 1e3, '{:.1f}')} |")
    row = results["predict20"]
    store = " (new: with its result store, which the old code does not have)" if "predict20_no_store" in results else ""
    rows.append(f"| `trd predict` demo model, 20 scans end to end{store} (s; scores differ by at most "
                f"{row['max_score_difference']:.1g}) | **{row['ratio']:.2f}x** | {_cell(row)} |")
    if "predict20_no_store" in results:
        row = results["predict20_no_store"]
        rows.append(f"| the same, new with `--store none` (the old code's work) (s) | **{row['ratio']:.2f}x** | {_cell(row)} |")
    load = results["load_1min"]
    rows.append(f"\n1-minute load average during the run: {load['min']:.2f}-{load['max']:.2f} (median {load['median']:.2f}); "
                f"pinned to CPU(s) {results['pinned_cpus']}; {results['machine']}; {results['date']}.")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
