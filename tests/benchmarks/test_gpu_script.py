"""benchmarks/gpu.py on a machine without CUDA (this one): its argument handling and its clear,
immediate refusal; the pure parts of the metric check and of the checkpoint table."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the scripts import their siblings (bench.py imports hardware.py)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    return _module("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_stops_at_once_with_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "gpu-quick"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: benchmarks/gpu.py measures the GPU rows and needs a CUDA GPU")
    assert "torch.cuda.is_available() is False" in lines[0] and "bench.py --device cpu" in lines[0]
    assert proc.stdout == "" and not out.exists()  # nothing started, nothing written


@pytest.mark.parametrize(("argv", "message"), [
    (["--quick"], "required: --out"),
    (["--out", "o"], "give --data MVTEC3D_ROOT"),
    (["--out", "o", "--quick", "--data", "d"], "--quick runs on synthetic data only"),
    (["--out", "o", "--quick", "--backbone-weights", "w.pth"], "--quick runs on synthetic data only"),
    (["--out", "o", "--data", "{tmp}"], "no bagel/train folder"),
    (["--out", "o", "--data", "{tmp}", "--category", "tire"], "no tire/train folder"),
    (["--out", "o", "--quick", "--ort-gpu-python", "{tmp}/none/bin/python"], "no such interpreter"),
])
def test_bad_arguments_are_refused_before_anything_runs(gpu: ModuleType, tmp_path: Path, capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu.parse_args([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_good_arguments(gpu: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "bagel" / "train").mkdir(parents=True)
    args = gpu.parse_args(["--out", "o", "--data", str(tmp_path), "--backbone-weights", "w.pth"])
    assert not args.quick and args.category == "bagel" and args.data == tmp_path
    assert gpu.parse_args(["--out", "o", "--quick"]).quick
    assert gpu.parse_args(["--out", "o", "--no-reproduce"]).no_reproduce
    assert gpu.parse_args(["--out", "o", "--quick", "--no-compile"]).no_compile
    assert gpu.parse_args(["--out", "o", "--quick", "--ort-gpu-python", sys.executable]).ort_gpu_python == Path(sys.executable)
    assert gpu.GPU_PROVIDERS.split(",")[0] == "cpu:fp32"  # the reference comes first


def test_provider_rows_compare_each_configuration_with_cpu_fp32() -> None:
    providers = _module("providers")
    cuda = {"provider": "CUDAExecutionProvider", "create_s": 3.0, "create_again_s": None, "s_per_batch": 0.02,
            "cpu_s_per_batch": 0.4, "max_score_diff": 1e-5, "max_score_diff_rel": 1e-6, "max_map_diff": 2e-5}
    trt = cuda | {"provider": "TensorrtExecutionProvider", "create_s": 90.0, "create_again_s": 2.0, "s_per_batch": 0.01,
                  "max_score_diff": 0.02, "max_score_diff_rel": 0.004, "max_map_diff": 0.1}
    text = providers._table({"batch": 8, "models": {"paper": {"rows": {"cuda fp32": cuda, "tensorrt fp16": trt}}}})
    assert "| paper (batch 8) | cuda fp32 | CUDAExecutionProvider | 3.00 | 0.020 | 0.400 | 20.00x | 1.00e-05 (1.0e-06) |" in text
    assert "| paper (batch 8) | tensorrt fp16 | TensorrtExecutionProvider | 90.00 (cached: 2.00) | 0.010 | 0.400 | 40.00x | " \
           "2.00e-02 (4.0e-03) | 1.00e-01 |" in text


def test_metric_check_comparison() -> None:
    mc = _module("metric_check")
    ref = {"metrics": {k: 0.8 for k in mc.METRICS} | {"aupro@0.01": math.nan}, "scores": [1.0, 2.0, 5.0]}
    close = {"metrics": {k: 0.81 for k in mc.METRICS} | {"aupro@0.01": math.nan}, "scores": [1.0, 2.0, 5.2]}
    far = {"metrics": {k: 0.8 for k in mc.METRICS} | {"aupro@0.01": math.nan, "i_auroc": 0.75}, "scores": [1.0, 2.0, 5.0]}
    checked = mc.compare({mc.REFERENCE: ref, "bf16 autocast": close, "channels_last": far,
                          "torch.compile": {"error": "RuntimeError: boom"}})
    assert checked[mc.REFERENCE]["within"] and checked[mc.REFERENCE]["max_score_diff_rel"] == 0.0
    assert checked["bf16 autocast"]["within"]
    assert checked["bf16 autocast"]["deltas"]["i_auroc"] == pytest.approx(0.01)
    assert checked["bf16 autocast"]["max_score_diff_rel"] == pytest.approx(0.2 / 4.0)
    assert not checked["channels_last"]["within"] and checked["channels_last"]["deltas"]["i_auroc"] == pytest.approx(-0.05)
    assert checked["torch.compile"] == {"error": "RuntimeError: boom", "within": False}
    text = mc.markdown({mc.REFERENCE: ref, "channels_last": far, "torch.compile": {"error": "boom"}}, checked, 0.02)
    assert "| channels_last | 0.7500 (-0.0500) |" in text and "**no**" in text and "error: RuntimeError: boom" in text
    # Training: a difference no larger than the other seed's counts as within the run-to-run spread.
    seed = {"metrics": {k: 0.8 for k in mc.METRICS} | {"aupro@0.01": math.nan, "i_auroc": 0.74}, "scores": [1.0, 2.0, 5.0]}
    with_noise = mc.compare({mc.REFERENCE: ref, mc.NOISE: seed, "channels_last": far}, 0.02, mc.NOISE)
    assert with_noise["channels_last"]["within"] and with_noise[mc.NOISE]["within"] is None
    with pytest.raises(SystemExit):
        mc.parse_args(["--out", "o", "--train", "fp16"])
    args = mc.parse_args(["--out", "o", "--train", "bf16 autocast", "--infer", "channels_last"])
    assert args.train_names == [mc.REFERENCE, mc.NOISE, "bf16 autocast"]
    assert args.infer_names == [mc.REFERENCE, "channels_last"]
    assert mc.parse_args(["--out", "o", "--train", ""]).train_names == [mc.REFERENCE]


def test_checkpoint_share_before_and_after() -> None:
    bench = _module("bench")
    rows = bench.toggle_rows(fast_bf16=False, compile_=False)
    rows[1].results["train"] = [{"train_pairs_per_s": 2.66}]  # defaults: 100 s per 266-pair epoch
    rows[3].results["train"] = [{"train_pairs_per_s": 1.33}]
    ckpt = {"results": [{"ckpt_write_s": 10.0, "ckpt_bytes": 4_600_000_000}]}
    text, fig = bench.checkpoint_table("paper", ckpt, rows)
    assert fig["epoch_s"] == pytest.approx(100.0) and fig["epoch_row"] == "ours: defaults (fp32)"
    assert fig["share_every_epoch"] == pytest.approx(10 / 110)  # before: a write after every epoch
    assert fig["interval_s"] == pytest.approx(600.0) and fig["share_by_time"] == pytest.approx(10 / 610)
    assert "| train state write | 4600 | 10.00 | 460 | 100.0 | 9.1% | 1.6% |" in text
