"""Which execution providers each install of trd offers, proven in fresh virtual environments.

    python3 benchmarks/extras.py --venvs /tmp/trd-extras --out benchmarks/results-extras.json
    python3 benchmarks/extras.py --venvs .venv-extras --extras openvino --create-only   # CI: the OpenVINO venv

For each install it makes a fresh venv (``python -m venv``), installs this checkout into it with
pip from the package index, and asks that venv (a child process with ``PYTHONPATH=src``, so the
checkout's current code answers): which ONNX Runtime distributions it holds
(`trd.runtime.providers.installed_builds`), what ``onnxruntime.get_available_providers()`` says,
what trd says about the install (`import_onnxruntime`: fine, or its one-line error), and, given a
model (``--model``, default: a tiny random one exported here, which needs torch), which provider
``--ep auto`` really runs on. Installs:

- ``cpu``, ``gpu``, ``openvino``: ``pip install '.[EXTRA]'``;
- ``none``: ``pip install .`` (no build: trd must say which extra to add);
- ``two``: ``pip install '.[cpu]'``, then ``pip install onnxruntime-openvino`` on top (two builds:
  trd must refuse, naming both).

An install that pip cannot complete here is recorded with pip's last line. With ``--create-only``
it only makes (or updates) the venvs: CI runs the OpenVINO parity test in ``VENVS/openvino``
(tests/runtime/test_providers.py reads ``TRD_OPENVINO_PYTHON``). Writes ``--out`` (JSON) and prints
a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INSTALLS = {"cpu": ["[cpu]"], "openvino": ["[openvino]"], "gpu": ["[gpu]"], "none": [""],
            "two": ["[cpu]", "onnxruntime-openvino"]}
PROBE = r"""
import json, sys
from trd.runtime.providers import build_problem, import_onnxruntime, installed_builds
from trd.errors import TRDError
out = {"builds": installed_builds()}
try:
    ort = import_onnxruntime()
    out |= {"trd": "ok", "onnxruntime": ort.__version__, "available": ort.get_available_providers()}
except TRDError as exc:
    out["trd"] = f"error: {exc}"
if out["trd"] == "ok" and len(sys.argv) > 1:
    from trd.runtime.ort import open_onnx
    try:
        engine = open_onnx(sys.argv[1], 1, ep="auto")
        out["auto_runs_on"] = engine.provider
    except TRDError as exc:
        out["auto_runs_on"] = f"error: {exc}"
print("RESULT " + json.dumps(out))
"""


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def make_venv(folder: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """Create (or reuse) the venv of install ``name`` and install into it; (its python, what happened)."""
    venv = folder / name
    python = venv / "bin" / "python"
    start = time.perf_counter()
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    steps = []
    for item in INSTALLS[name]:
        spec = f"{ROOT}{item}" if item == "" or item.startswith("[") else item
        proc = _pip(python, spec)
        steps.append({"pip install": spec.replace(str(ROOT), "."), "exit": proc.returncode,
                      "last_line": (proc.stderr.strip().splitlines() or [""])[-1] if proc.returncode else ""})
        if proc.returncode:
            break
    size = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True).stdout.split()
    return python, {"steps": steps, "installed": all(s["exit"] == 0 for s in steps),
                    "install_s": round(time.perf_counter() - start, 1), "venv_mb": int(size[0]) if size else None}


def probe(python: Path, model: Path | None) -> dict[str, Any]:
    """What the venv's trd says about its ONNX Runtime (the checkout's code, via PYTHONPATH)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([str(python), "-c", PROBE, *([str(model)] if model else [])], capture_output=True,
                          text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"probe_error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][len("RESULT "):])


def tiny_model(folder: Path) -> Path:
    """A tiny random-teacher model exported to ONNX (64 px, resnet18): needs torch here."""
    import warnings

    sys.path.insert(0, str(ROOT / "src"))
    from trd import api
    from trd.config import load_config
    from trd.data.synth import generate

    generate(folder / "data", ["puck"], size=64, n_train=4, n_validation=2, n_test_good=1, n_test_per_defect=1)
    cfg = load_config(None, ["model.backbone=resnet18", "model.weights=none", "model.decoder_blocks=1,1,1",
                             "model.bottleneck_blocks=1", "data.image_size=64", "train.epochs=1",
                             "train.batch_size=2", "data.cache_dir=none", f"data.root={folder / 'data'}",
                             "data.category=puck"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = api.fit(cfg, folder / "run", progress=False, log=lambda _: None)
    return api.export(model, folder / "tiny.onnx")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venvs", type=Path, required=True, help="folder of the venvs (kept and reused)")
    p.add_argument("--extras", default=",".join(INSTALLS), help=f"comma-separated, of {', '.join(INSTALLS)}")
    p.add_argument("--out", type=Path, default=None, help="results JSON")
    p.add_argument("--model", type=Path, default=None, help="ONNX export for the --ep auto probe (default: a tiny one)")
    p.add_argument("--create-only", action="store_true", help="make the venvs, probe nothing")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.extras.split(",") if n.strip()]
    unknown = [n for n in names if n not in INSTALLS]
    if unknown:
        p.error(f"--extras: unknown {unknown}; known: {', '.join(INSTALLS)}")
    args.venvs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or (None if args.create_only else tiny_model(Path(tmp)))
        for name in names:
            python, made = make_venv(args.venvs, name)
            results[name] = made | ({} if args.create_only or not made["installed"] else probe(python, model))
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.create_only:
        return 0 if all(r["installed"] for r in results.values()) else 1
    report = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
              "machine": platform.machine(), "installs": results}
    rows = ["| install | ONNX Runtime distributions | get_available_providers() | trd says | --ep auto runs on |",
            "|---|---|---|---|---|"]
    for name, r in results.items():
        builds = ", ".join(f"{k} {v}" for k, v in sorted(r.get("builds", {}).items())) or "none"
        said = r.get("trd", r.get("probe_error", "not installed: " + r["steps"][-1]["last_line"]))
        rows.append(f"| {name} | {builds} | {', '.join(r.get('available', [])) or '-'} | {said} | "
                    f"{r.get('auto_runs_on', '-')} |")
    report["table"] = "\n".join(rows)
    print(report["table"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
