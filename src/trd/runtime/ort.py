"""An exported detector run by onnxruntime, without torch: ``engine(rgb, x3d) -> {name: array}``.

The file describes itself (``metadata_props``, keys :data:`META_KEYS`): the resolved config, the
thresholds with their guarantee, the branch names, the input normalisation, the training inputs'
scale and size, the trd version. Outputs are the keys of ``trd.detector.Detector.forward``:
``anomaly_map``, ``score``, ``share_<branch>``, ``map_<branch>`` and (exports since
``scored_<branch>`` was added) ``scored_<branch>``. Exports written before the geometry branch was
renamed (``3d``) or before the branch shares were named so (``contrib_<branch>``) load unchanged,
their outputs under today's names.

Sessions are sized from the CPUs this process may use (`trd.runtime.threads`): ``intra_op`` threads
= that count, one inter-op thread, sequential execution, all graph optimisations. Every session is
opened by `open_session`, the one place that chooses the execution provider (`trd.runtime.providers`)
and checks that the session really runs on it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..config import Config, legacy_branch, validate_config
from ..data.inputs import InputStats
from ..data.identity import files_sha256
from ..errors import CheckpointError, ConfigError, TRDError
from ..scoring.threshold import Thresholds
from .precision import cache_folder, fp16_graph
from .providers import PROVIDERS, Placement, candidates, import_onnxruntime, parse_ep, placement
from .threads import inference_threads

INPUT_NAMES = ("rgb", "x3d")
FORMAT = "trd-onnx"
FORMAT_VERSION = "1"
#: metadata_props keys (values are strings; JSON where structured).
META_KEYS = {
    "format": "trd.format",
    "format_version": "trd.format_version",
    "version": "trd.version",
    "config": "trd.config",
    "thresholds": "trd.thresholds",
    "branches": "trd.branches",
    "input": "trd.input",
    "inputs_seen": "trd.training_inputs",  # scale and size of the training inputs (optional)
    "validation_scores": "trd.validation_scores",  # image scores the thresholds came from (optional)
}


def output_names(branches: list[str], share: str = "share", scored: bool = True) -> list[str]:
    """Graph outputs, in the order of ``Detector.forward``'s keys (``share="contrib"``,
    ``scored=False``: the layouts of older exports)."""
    names = ["anomaly_map", "score", *(f"{share}_{b}" for b in branches), *(f"map_{b}" for b in branches)]
    return names + [f"scored_{b}" for b in branches] if scored else names


def require(module: str) -> ModuleType:
    """Import an optional dependency, or explain how to install it (a one-line TRDError)."""
    if module == "onnxruntime":
        return import_onnxruntime()
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TRDError(f"this needs the '{module}' package: pip install '{module}' (the training install "
                       "'trd-anomaly[train]' has it)") from None


def session_options(ort: ModuleType, threads: int) -> Any:
    """Options of every session: ``threads`` intra-op threads, no inter-op parallelism."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _trt_settings(path: Path, precision: str, max_batch: int) -> dict[str, Any]:
    """TensorRT's engine cache folder and profile shapes: engines are built for one model, precision
    and range of input shapes, so the folder is keyed by all three (beside the model, or in the user
    cache when its folder is read-only). The input size comes from the graph (needs ``onnx``)."""
    graph = require("onnx").load(str(path), load_external_data=False).graph
    size = graph.input[0].type.tensor_type.shape.dim[2].dim_value
    sha = files_sha256(path, path.with_name(path.name + ".data"), missing_ok=True)
    folder = cache_folder(path.parent / ".trt-cache", "tensorrt") / f"{path.stem}-{sha[:16]}-{precision}-{size}px-b{max_batch}"
    folder.mkdir(parents=True, exist_ok=True)
    shape = {k: ",".join(f"{name}:{b}x3x{size}x{size}" for name in INPUT_NAMES)
             for k, b in (("min", 1), ("opt", max_batch), ("max", max_batch))}
    return {"trt_cache": folder, "trt_shapes": shape}


def _warm_up(session: Any) -> None:
    """One run on a zero batch: some providers accept a graph and fail only when they run it."""
    dims = session.get_inputs()[0].shape
    if all(isinstance(d, int) for d in dims[1:]):
        zeros = np.zeros((1, *dims[1:]), np.float32)
        session.run(None, {name: zeros for name in INPUT_NAMES})


def open_session(ort: ModuleType, path: Path, threads: int, ep: str = "cpu", precision: str = "fp32", *,
                 max_batch: int = 8, log: Callable[[str], None] | None = None) -> tuple[Any, Placement]:
    """A session on ``path`` and where it runs: the one place that picks the execution provider.

    ``ep``/``precision``: `trd.runtime.providers` (``auto`` takes the first provider that starts).
    A provider that onnxruntime replaces by the CPU (it only logs when one cannot start) or that
    fails its first run is refused, naming why; CheckpointError for a file that is not a model.
    ``max_batch``: the largest batch (TensorRT's engines are built for a range of batch sizes).
    """
    base, ov_device = parse_ep(ep)
    problems = []
    for key in candidates(ep, precision, ort.get_available_providers(), f"onnxruntime {ort.__version__}"):
        if base == "auto" and key in ("cuda", "tensorrt") and _no_gpu_device():
            problems.append(f"{PROVIDERS[key]}: no GPU device here")
            continue
        try:
            session, place = _start(ort, path, key, precision, threads, ov_device, max_batch, log)
            return session, place
        except _Refused as exc:
            problems.append(str(exc))
        except TRDError as exc:
            if base != "auto" or isinstance(exc, CheckpointError):
                raise
            problems.append(f"{PROVIDERS[key]}: {exc}")
    raise ConfigError(f"--ep {ep}: " + "; ".join(problems))


class _Refused(Exception):
    """A provider that cannot run the model here (why, in one line)."""


def _start(ort: ModuleType, path: Path, key: str, precision: str, threads: int, ov_device: str | None,
           max_batch: int, log: Callable[[str], None] | None) -> tuple[Any, Placement]:
    """A session of provider ``key`` that runs, or _Refused saying why."""
    if key in ("cuda", "tensorrt") and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # CUDA and cuDNN from pip's nvidia packages, where installed
            ort.preload_dlls()
    graph = fp16_graph(path, log) if precision == "fp16" and key in ("cpu", "cuda") else path
    extra = _trt_settings(path, precision, max_batch) if key == "tensorrt" else {}
    place = placement(key, precision, threads=threads, ov_device=ov_device, **extra)
    try:
        try:
            session = ort.InferenceSession(str(graph), sess_options=session_options(ort, threads),
                                           providers=list(place.providers))
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            if key == "cpu" or type(exc).__name__ in ("InvalidProtobuf", "NoSuchFile", "InvalidGraph"):
                raise CheckpointError(path, f"not a readable ONNX model (truncated or corrupt?): {_first_line(exc)}") from None
            raise _Refused(f"{place.provider} failed to start: {_first_line(exc)}") from None
        got = session.get_providers()[0]
        if got != place.provider:
            raise _Refused(f"{place.provider} did not start here (onnxruntime would have run on {got}; its log says why)")
        if key != "cpu" or graph != path:
            try:
                _warm_up(session)
            except Exception as exc:  # noqa: BLE001 - any failure of the provider's first run
                hint = " (an export written before trd ran on OpenVINO fails so: export the model again)" \
                    if key == "openvino" else ""
                raise _Refused(f"{place.provider} cannot run this model: {_first_line(exc)}{hint}") from None
    except (_Refused, CheckpointError):
        if "trt_cache" in extra:
            with contextlib.suppress(OSError):  # the engine folder of a TensorRT that never ran
                extra["trt_cache"].rmdir()
        raise
    return session, place


def _no_gpu_device() -> bool:
    """On Linux, whether no GPU device node exists (``auto`` then skips CUDA and TensorRT without
    loading the model for them); elsewhere False (they are tried)."""
    return sys.platform == "linux" and not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/dxg"))


@dataclass
class OrtEngine:
    """A loaded export: call it with ImageNet-normalised B x 3 x S x S float32 arrays."""

    path: Path
    session: Any
    config: Config
    thresholds: Thresholds
    branches: list[str]
    inputs: InputStats | None
    validation_scores: list[float] | None
    threads: int
    placement: Placement
    _names: list[str]
    _keys: list[str]

    name = "onnxruntime"

    def __call__(self, rgb: np.ndarray, x3d: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"rgb": np.ascontiguousarray(rgb, dtype=np.float32), "x3d": np.ascontiguousarray(x3d, dtype=np.float32)}
        return dict(zip(self._keys, self.session.run(self._names, feeds), strict=True))

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def precision(self) -> str:
        return self.placement.precision


def open_onnx(path: str | Path, threads: int | None = None, *, ep: str = "auto", precision: str = "fp32",
              max_batch: int = 8, log: Callable[[str], None] | None = None) -> OrtEngine:
    """Load a ``trd export`` file on execution provider ``ep`` at ``precision`` (`open_session`);
    CheckpointError for a missing, unreadable or foreign file, ConfigError for a provider that
    cannot run it here."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "ONNX file not found")
    n = inference_threads(threads)
    session, place = open_session(ort, path, n, ep, precision, max_batch=max_batch, log=log)
    meta = read_metadata(path, session.get_modelmeta().custom_metadata_map)
    cfg, thresholds, branches, inputs, scores = meta
    names = [o.name for o in session.get_outputs()]
    layouts = [output_names(branches, share, scored) for share in ("share", "contrib") for scored in (True, False)]
    if names not in layouts or [i.name for i in session.get_inputs()] != list(INPUT_NAMES):
        raise CheckpointError(path, f"ONNX graph does not have the trd inputs {list(INPUT_NAMES)} and outputs "
                                    f"{output_names(branches)}")
    current = [legacy_branch(b) for b in branches]
    keys = output_names(current, scored=len(names) == len(layouts[0]))
    return OrtEngine(path, session, cfg, thresholds, current, inputs, scores, n, place, names, keys)


def read_metadata(path: Path, meta: dict[str, str]) -> tuple[Config, Thresholds, list[str], InputStats | None,
                                                               list[float] | None]:
    """Config, thresholds, branches, training-input statistics and validation scores from an
    export's metadata; CheckpointError if they are not trd's."""
    if meta.get(META_KEYS["format"]) != FORMAT:
        raise CheckpointError(path, "ONNX file has no trd metadata (not written by `trd export`)")
    if meta.get(META_KEYS["format_version"]) != FORMAT_VERSION:
        raise CheckpointError(path, f"trd ONNX format version {meta.get(META_KEYS['format_version'])} is not "
                                    f"supported (expected {FORMAT_VERSION})")
    try:
        raw = {key: json.loads(meta[META_KEYS[key]]) for key in ("config", "thresholds", "branches")}
        cfg = validate_config(Config.from_dict(raw["config"], source=META_KEYS["config"]), META_KEYS["config"])
        branches = [str(b) for b in raw["branches"]]
        inputs = InputStats.from_dict(json.loads(meta.get(META_KEYS["inputs_seen"], "null")))
        scores = json.loads(meta.get(META_KEYS["validation_scores"], "null"))
        return cfg, Thresholds.from_dict(raw["thresholds"]), branches, inputs, scores
    except (KeyError, ValueError, TypeError, AttributeError, TRDError) as exc:
        raise CheckpointError(path, f"damaged trd metadata in the ONNX file: {exc}") from None
