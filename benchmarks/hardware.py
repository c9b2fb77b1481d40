"""What the benchmark ran on, and whether bf16 is worth enabling on this device."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

#: CPU flags that give native bf16 arithmetic (without them bf16 is emulated and slower than fp32).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; empty where unavailable (non-Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _median_seconds(fn: Any, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_bf16_probe() -> dict[str, Any]:
    """Hardware flags for native bf16, plus a measured fp32 vs bf16-autocast conv ratio (informative)."""
    _, flags = _cpuinfo()
    found = sorted(f for f in BF16_CPU_FLAGS if f in flags)
    x = torch.randn(4, 128, 56, 56)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).eval()

    def fp32() -> None:
        with torch.inference_mode():
            conv(x)

    def bf16() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)

    t32, t16 = _median_seconds(fp32), _median_seconds(bf16)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags_found": found,
        "conv_fp32_ms": round(1000 * t32, 2),
        "conv_bf16_ms": round(1000 * t16, 2),
        "bf16_speedup": round(t32 / t16, 2),
        # Flags decide; the micro-benchmark must agree (a VM can hide or throttle the units).
        "fast_bf16": bool(found) and t32 / t16 > 1.1,
    }


def bf16_decision(device: torch.device) -> dict[str, Any]:
    """Whether the bf16 rows run on ``device``, with the evidence."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return {"device": "cuda", "fast_bf16": ok, "reason": "torch.cuda.is_bf16_supported()"}
    probe = cpu_bf16_probe()
    if probe["fast_bf16"]:
        reason = "native bf16 units found and faster in the probe"
    elif probe["bf16_flags_found"]:
        reason = "bf16 flags found but the probe conv was not > 1.1x faster under bf16 autocast, so it stays off"
    else:
        reason = "no AMX/AVX512-BF16: bf16 is emulated on this CPU, so it stays off"
    return {"device": "cpu", **probe, "reason": reason}


def hardware_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, memory, torch version and (if any) the CUDA device."""
    model, _ = _cpuinfo()
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _memory_gb(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_device": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(cuda_device=props.name, cuda_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda_capability=f"{props.major}.{props.minor}", cuda_runtime=torch.version.cuda)
    return info
