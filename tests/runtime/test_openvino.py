"""The OpenVINO execution provider (it runs on this kind of CPU) against the CPU provider on the test
fixtures: every output within 1e-4, ``auto`` choosing it, an OpenVINO device that is not there
refused instead of silently run on the CPU.

It needs ``onnxruntime-openvino``, which cannot share an environment with the CPU build: it runs
in this interpreter where that is the installed build, else in the Python of an ``[openvino]``
venv (``TRD_OPENVINO_PYTHON``, or ``.venv-extras/openvino`` that ``benchmarks/extras.py
--extras openvino --create-only --venvs .venv-extras`` makes and .ci/run creates), with this
checkout's code; elsewhere it skips, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trd.runtime.providers import installed_builds

ROOT = Path(__file__).resolve().parents[2]
CHECK = r"""
import json, sys
from pathlib import Path
import numpy as np
from trd.data.samples import unlabelled_samples
from trd.errors import TRDError
from trd.runtime.batches import load_batch
from trd.runtime.ort import open_onnx
model, inputs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
cpu, ov, auto = (open_onnx(model, 1, ep=ep) for ep in ("cpu", "openvino", "auto"))
diffs, n = {}, 0
for folder in inputs:
    samples, _ = unlabelled_samples(cpu.config.data, folder)
    batch = load_batch(samples, range(len(samples)), cpu.config.data, reference=cpu.inputs)
    a, b = cpu(batch.rgb, batch.x3d), ov(batch.rgb, batch.x3d)
    n += len(samples)
    for key in a:
        diffs[key] = max(diffs.get(key, 0.0), float(np.abs(a[key] - b[key]).max()))
try:
    open_onnx(model, 1, ep="openvino:NPU")
    refused = None
except TRDError as exc:
    refused = str(exc)
print("RESULT " + json.dumps({"diffs": diffs, "samples": n, "providers": [cpu.provider, ov.provider, auto.provider],
                              "refused": refused}))
"""


def _openvino_python() -> str | None:
    if "onnxruntime-openvino" in installed_builds():
        return sys.executable
    for candidate in (os.environ.get("TRD_OPENVINO_PYTHON"), str(ROOT / ".venv-extras" / "openvino" / "bin" / "python")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def test_openvino_matches_the_cpu_provider_on_the_fixtures(exported, synth_root: Path) -> None:
    python = _openvino_python()
    if python is None:
        pytest.skip("onnxruntime-openvino is not installed here and there is no [openvino] venv: run "
                    "benchmarks/extras.py --extras openvino --create-only --venvs .venv-extras (or set TRD_OPENVINO_PYTHON)")
    folders = [str(p) for p in sorted((synth_root / "puck" / "test").iterdir())]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([python, "-c", CHECK, str(exported[1]), *folders], capture_output=True, text=True, env=env,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["providers"] == ["CPUExecutionProvider", "OpenVINOExecutionProvider", "OpenVINOExecutionProvider"]
    assert result["samples"] == 8 and set(result["diffs"]) >= {"anomaly_map", "score", "share_rgb", "map_geo"}
    assert max(result["diffs"].values()) < 1e-4, result["diffs"]
    refused = result["refused"]
    assert refused is not None and refused.startswith("--ep openvino:NPU: OpenVINOExecutionProvider"), refused
