"""Scaling out, refused at the door in one line: execution providers and precisions this install
does not have, bad shards, Ray where it is missing or cannot be used, two ONNX Runtime builds in one
install, and merges of parts that do not belong together."""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from trd.runfolder import folder_lock
from trd.runtime.providers import installed_builds

CPU_BUILD = set(installed_builds()) == {"onnxruntime"}
BAD_OPTIONS = [
    (["--ep", "gpu"], "--ep 'gpu': expected one of auto, cpu, openvino, cuda, tensorrt"),
    (["--ep", "openvino:XPU"], "--ep 'openvino:XPU': expected one of auto, cpu, openvino, cuda, tensorrt"),
    (["--precision", "int8"], "--precision 'int8': expected one of fp32, fp16, bf16"),
    (["--ep", "cpu", "--precision", "bf16"], "--precision bf16 is not offered by --ep cpu; it is by openvino"),
    (["--shard", "0/3"], "--shard '0/3': expected I/N with 1 <= I <= N"),
    (["--shard", "4/3"], "--shard '4/3': expected I/N with 1 <= I <= N"),
    (["--shard", "half"], "--shard 'half': expected I/N with 1 <= I <= N"),
    (["--ray", "--engine", "torch"], "--ray scores with onnxruntime on the workers, but --engine torch runs the torch "
                                     "engine"),
]
#: Providers the CPU build lacks, and the install that has them.
MISSING = [("openvino", "openvino"), ("cuda", "gpu"), ("tensorrt", "gpu")]


def _predict(exported, synth_root: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--onnx", str(exported[1]), "--input", str(synth_root / "puck" / "test" / "good"),
            "--out", str(out), *extra]


@pytest.mark.parametrize(("extra", "message"), BAD_OPTIONS, ids=[" ".join(b[0]) for b in BAD_OPTIONS])
def test_bad_scale_option_is_refused_in_one_line(extra: list[str], message: str, exported, synth_root: Path,
                                                 tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    result = tools.run_cli_inprocess(*_predict(exported, synth_root, tmp_path / "p", *extra))
    assert result.code == 2, result.stdout
    (line,) = tools.visible_lines(result.stderr)
    assert line.startswith("error: ") and message in line, line
    assert not (tmp_path / "p").exists()
    messages.record("setting", f"predict {' '.join(extra)}", line)


@pytest.mark.skipif(not CPU_BUILD, reason="checks the CPU build's answer; this install has another build")
@pytest.mark.parametrize(("ep", "extra"), MISSING)
def test_a_provider_this_build_lacks_names_the_install_that_has_it(ep: str, extra: str, exported, synth_root: Path,
                                                                   tmp_path: Path, tools: SimpleNamespace,
                                                                   messages) -> None:
    result = tools.run_cli_inprocess(*_predict(exported, synth_root, tmp_path / "p", "--ep", ep))
    assert result.code == 2
    (line,) = tools.visible_lines(result.stderr)
    assert f"--ep {ep}: this onnxruntime build (onnxruntime " in line and "has no " in line, line
    assert f"pip install 'trd-anomaly[{extra}]' instead" in line
    messages.record("setting", f"predict --ep {ep} where only the CPU build is installed", line)


def test_ep_with_the_torch_engine_is_refused(exported, synth_root: Path, tmp_path: Path, tools: SimpleNamespace,
                                             messages) -> None:
    args = ["predict", "--model", str(exported[0]), "--input", str(synth_root / "puck" / "test" / "good"),
            "--out", str(tmp_path / "p"), "--engine", "torch", "--precision", "fp16"]
    result = tools.run_cli_inprocess(*args)
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and "--precision fp16 choose how onnxruntime runs, but --engine torch runs" in line, line
    messages.record("setting", "predict --engine torch --precision fp16", line)


def test_two_onnxruntime_builds_are_refused_naming_both(exported, synth_root: Path, tmp_path: Path,
                                                        tools: SimpleNamespace, messages) -> None:
    """A second build's metadata on the path, exactly as pip leaves it after ``pip install
    onnxruntime-openvino`` beside ``onnxruntime`` (benchmarks/extras.py does it for real)."""
    site = tmp_path / "site"
    info = site / "onnxruntime_openvino-1.24.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-openvino\nVersion: 1.24.1\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\n")
    env = tools.cli_env() | {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "trd.cli", *_predict(exported, synth_root, tmp_path / "p")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    (line,) = tools.visible_lines(result.stderr)
    builds = ", ".join(f"{k}=={v}" for k, v in sorted(installed_builds().items()) if k != "onnxruntime-openvino")
    assert line.startswith("error: 2 ONNX Runtime builds are installed (") and "onnxruntime-openvino==1.24.1" in line
    assert builds in line and "pip uninstall -y " in line and "pip install 'trd-anomaly[cpu]'" in line
    assert not (tmp_path / "p").exists()
    messages.record("install", "two ONNX Runtime builds in one environment", line)


def test_ray_where_it_is_not_installed(exported, synth_root: Path, tmp_path: Path, tools: SimpleNamespace,
                                       messages) -> None:
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['trd', *sys.argv[1:]]\n"
            "from trd.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, *_predict(exported, synth_root, tmp_path / "p", "--ray")],
                            capture_output=True, text=True, env=tools.cli_env(), timeout=300)
    (line,) = tools.visible_lines(result.stderr)
    assert result.returncode == 2 and line == ("error: --ray needs Ray (with Ray Data), which is not installed here: "
                                               "pip install 'trd-anomaly[ray]'"), result.stderr
    messages.record("install", "predict --ray without Ray", line)


def test_merge_refuses_parts_that_do_not_belong_together(exported, synth_root: Path, tmp_path: Path,
                                                         tools: SimpleNamespace, messages) -> None:
    from trd import api

    inputs = synth_root / "puck" / "test" / "good"
    api.predict(None, tmp_path / "onnx", input_dir=inputs, onnx_path=exported[1], log=lambda _: None)
    api.predict(exported[0], tmp_path / "pt", input_dir=inputs, engine="onnx", log=lambda _: None)
    # a model.pt and its export are one model: their parts merge (the same scans once)
    same = tools.run_cli_inprocess("predict-merge", str(tmp_path / "onnx"), str(tmp_path / "pt"), "--out",
                                   str(tmp_path / "both"))
    assert same.code == 0 and json.loads(same.stdout)["duplicates"] == len(list((inputs / "rgb").iterdir()))
    manifest = tmp_path / "pt" / "predict.json"  # now scored by another model
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"sha256": "f" * 64, "source_sha256": None}))
    cases = [
        ("input", "predict-merge of parts scored by two models", [tmp_path / "onnx", tmp_path / "pt"],
         "the parts were scored by 2 different models"),
        ("input", "predict-merge of a folder predict did not write", [tmp_path / "onnx", synth_root],
         "no predict.json: not an output folder of trd predict"),
        ("setting", "predict-merge --out into one of its parts", [tmp_path / "onnx"], "is one of the parts"),
    ]
    for section, case, parts, message in cases:
        out = parts[0] if section == "setting" else tmp_path / "all"
        result = tools.run_cli_inprocess("predict-merge", *map(str, parts), "--out", str(out))
        (line,) = tools.visible_lines(result.stderr)
        assert result.code == 2 and message in line, line
        assert not (tmp_path / "all").exists()
        messages.record(section, case, line)
    with folder_lock(tmp_path / "onnx", "trd predict"):  # a part still being written
        result = tools.run_cli_inprocess("predict-merge", str(tmp_path / "onnx"), "--out", str(tmp_path / "all"))
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 3 and "in use by trd predict" in line, line
    messages.record("output", "predict-merge of a part that is still being written", line)
    assert not (tmp_path / "all").exists()
