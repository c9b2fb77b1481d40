"""Which ONNX Runtime build is installed, and which execution provider runs a session (torch-free).

**Builds.** ONNX Runtime ships as several distributions that share the import name
``onnxruntime``: ``onnxruntime`` (CPU), ``onnxruntime-gpu`` (CUDA and TensorRT),
``onnxruntime-openvino`` (OpenVINO), ... Two of them in one environment overwrite each other's
files without a word from pip (the last installed runs, and uninstalling either breaks the other),
so `import_onnxruntime` counts them first, from the installed distributions' metadata (it works on
a broken install), and stops with one line unless there is exactly one. The extras ``[cpu]``,
``[gpu]`` and ``[openvino]`` each install one.

**Providers** (``--ep``): ``cpu``, ``openvino`` (``openvino:GPU`` / ``openvino:NPU`` for an Intel
GPU or NPU; CPU by default), ``cuda``, ``tensorrt``, or ``auto``: the first of
:data:`AUTO_ORDER` that the installed build has and that starts here. A provider that cannot start
is never replaced silently by the CPU (onnxruntime's own habit): `trd.runtime.ort` checks which
provider a session really got.

**Precision** (``--precision``): ``fp32`` (default), ``fp16`` (TensorRT's fp16 kernels; for the
CPU and CUDA providers a float16 copy of the graph, `trd.runtime.precision`; for OpenVINO its
inference-precision hint) and ``bf16`` (OpenVINO's hint; fast on CPUs with AMX).
DEPARTURE (docs/METHOD_NOTES.md §16), opt-in only: both change the scores; `trd test` measures by how much.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigError, TRDError

#: The builds the extras install, and the extra of each.
BUILDS = {"onnxruntime": "cpu", "onnxruntime-gpu": "gpu", "onnxruntime-openvino": "openvino"}
#: Other distributions known to ship the ``onnxruntime`` package (any other ``onnxruntime*`` or
#: ``ort-*`` distribution counts too when it holds ``onnxruntime/__init__.py``).
OTHER_BUILDS = ("onnxruntime-directml", "onnxruntime-qnn", "onnxruntime-training", "onnxruntime-rocm",
                "onnxruntime-migraphx", "onnxruntime-cann", "onnxruntime-vitisai", "ort-nightly", "ort-nightly-gpu")
INSTALL_ONE = "pip install 'trd-anomaly[cpu]' (or [gpu] for CUDA and TensorRT, or [openvino])"

EPS = ("auto", "cpu", "openvino", "cuda", "tensorrt")
PROVIDERS = {"cpu": "CPUExecutionProvider", "openvino": "OpenVINOExecutionProvider",
             "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: ``--ep auto`` takes the first of these that the build has and that starts.
AUTO_ORDER = ("tensorrt", "cuda", "openvino", "cpu")
PRECISIONS = ("fp32", "fp16", "bf16")
#: Which providers offer each reduced precision.
OFFERED = {"fp16": ("cpu", "cuda", "tensorrt", "openvino"), "bf16": ("openvino",)}
OPENVINO_DEVICES = ("CPU", "GPU", "NPU")
#: OpenVINO's inference-precision hint per precision (passed as ``load_config``).
_OV_HINT = {"fp16": "f16", "bf16": "bf16"}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_builds(path: list[str] | None = None) -> dict[str, str]:
    """``{distribution: version}`` of every installed ONNX Runtime build (on ``path``, default
    ``sys.path``), read from the package metadata without importing onnxruntime. Only the metadata
    folders whose names start like a build's are read (reading every installed package's metadata
    cost ~30 ms of each start)."""
    found: dict[str, str] = {}
    for entry in sys.path if path is None else path:
        site = Path(entry or ".")
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")) or \
                    not _normalised(folder).startswith(("onnxruntime", "ort-")):
                continue
            dist = importlib.metadata.PathDistribution(site / folder)
            name = _normalised(dist.metadata["Name"] or "")
            if name in found:
                continue  # the same distribution further down the path is shadowed
            known = name in BUILDS or name in OTHER_BUILDS
            if known or (name.startswith(("onnxruntime", "ort-"))
                         and any(str(f).replace("\\", "/") == "onnxruntime/__init__.py" for f in dist.files or ())):
                found[name] = dist.version
    return found


def build_problem(builds: dict[str, str]) -> str | None:
    """Why ``builds`` (from `installed_builds`) cannot be used, or None for exactly one."""
    if len(builds) > 1:
        listed = ", ".join(f"{name}=={version}" for name, version in sorted(builds.items()))
        return (f"{len(builds)} ONNX Runtime builds are installed ({listed}); they share the import name "
                f"'onnxruntime' and overwrite each other's files, so whichever was installed last runs. Keep one: "
                f"pip uninstall -y {' '.join(sorted(builds))} && {INSTALL_ONE}")
    return None


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module of the one installed build; TRDError (one line) for none or several."""
    builds = installed_builds()
    problem = build_problem(builds)
    if problem:
        raise TRDError(problem)
    try:
        return importlib.import_module("onnxruntime")
    except ImportError as exc:
        if not builds:
            raise TRDError(f"no ONNX Runtime build is installed: {INSTALL_ONE}") from None
        (name, version), = builds.items()
        raise TRDError(f"the ONNX Runtime build {name}=={version} is installed but cannot be imported ({exc}); "
                       f"reinstall it: pip install --force-reinstall --no-deps {name}=={version}") from None


def parse_ep(ep: str) -> tuple[str, str | None]:
    """``(provider key, OpenVINO device or None)`` of an ``--ep`` value; ConfigError if unknown."""
    base, _, device = ep.partition(":")
    if base not in EPS or (device and (base != "openvino" or device.upper() not in OPENVINO_DEVICES)):
        raise ConfigError(f"--ep {ep!r}: expected one of {', '.join(EPS)} (openvino:GPU or openvino:NPU for an "
                          "Intel GPU or NPU)")
    return base, (device.upper() or "CPU") if base == "openvino" else None


def check_precision(ep: str, precision: str) -> None:
    """ConfigError when ``precision`` is unknown or ``ep`` does not offer it."""
    base, _ = parse_ep(ep)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and base != "auto" and base not in OFFERED[precision]:
        raise ConfigError(f"--precision {precision} is not offered by --ep {ep}; it is by "
                          f"{', '.join(OFFERED[precision])}")


def candidates(ep: str, precision: str, available: list[str], build: str) -> list[str]:
    """The provider keys to try, in order: ``auto`` -> those of :data:`AUTO_ORDER` the build has
    (and that offer ``precision``); else ``ep`` itself, ConfigError when the build lacks it."""
    check_precision(ep, precision)
    base, _ = parse_ep(ep)
    if base == "auto":
        keys = [k for k in AUTO_ORDER if PROVIDERS[k] in available and (precision == "fp32" or k in OFFERED[precision])]
        if not keys:
            raise ConfigError(f"--precision {precision}: no provider of this onnxruntime build ({build}) offers it; "
                              f"{', '.join(OFFERED[precision])} do")
        return keys
    if PROVIDERS[base] not in available:
        extra = "gpu" if base in ("cuda", "tensorrt") else base
        raise ConfigError(f"--ep {ep}: this onnxruntime build ({build}) has no {PROVIDERS[base]} (it has "
                          f"{', '.join(available)}): pip install 'trd-anomaly[{extra}]' instead")
    return [base]


@dataclass(frozen=True)
class Placement:
    """Where a session runs: the provider key, its options as passed to onnxruntime, the precision."""

    ep: str
    precision: str
    providers: tuple[Any, ...]

    @property
    def provider(self) -> str:
        return PROVIDERS[self.ep]


def placement(key: str, precision: str, *, threads: int, ov_device: str | None = None,
              trt_cache: Path | None = None, trt_shapes: dict[str, str] | None = None) -> Placement:
    """The providers list for provider ``key`` at ``precision``.

    ``threads``: OpenVINO's thread count (the session's intra-op threads cover the others).
    ``trt_cache``: the folder TensorRT keeps its engines in (built once per model, precision and
    shape; building takes minutes for big models). ``trt_shapes``: ``{"min", "opt", "max"}``
    profile shapes as TensorRT's options spell them (``rgb:1x3x256x256,x3d:...``).
    """
    cuda: dict[str, str] = {"device_id": "0", "use_tf32": "0"}  # fp32 means fp32, not TensorFloat-32
    if key == "cpu":
        chain: list[Any] = ["CPUExecutionProvider"]
    elif key == "cuda":
        chain = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    elif key == "openvino":
        options = {"device_type": ov_device or "CPU", "num_of_threads": str(threads)}
        if precision in _OV_HINT:
            # An inline JSON string: onnxruntime-openvino 1.24 fails to parse a file path here.
            options["load_config"] = json.dumps({options["device_type"]: {"INFERENCE_PRECISION_HINT": _OV_HINT[precision]}})
        chain = [("OpenVINOExecutionProvider", options), "CPUExecutionProvider"]
    else:  # tensorrt, with CUDA for what TensorRT does not take
        options = {"device_id": "0", "trt_fp16_enable": str(precision == "fp16")}
        if trt_cache is not None:
            options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(trt_cache)}
        if trt_shapes is not None:
            options |= {f"trt_profile_{k}_shapes": v for k, v in trt_shapes.items()}
        chain = [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    return Placement(key, precision, tuple(chain))
