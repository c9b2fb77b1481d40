"""An exported detector run by onnxruntime, without torch: ``engine(rgb, x3d) -> {name: array}``.

The file describes itself (``metadata_props``, keys :data:`META_KEYS`): the resolved config, the
thresholds with their guarantee, the branch names, the input normalisation, the training inputs'
scale and size, the trd version. Outputs are the keys of ``trd.detector.Detector.forward``:
``anomaly_map``, ``score``, ``share_<branch>``, ``map_<branch>`` and (exports since
``scored_<branch>`` was added) ``scored_<branch>``. Exports written before the geometry branch was
renamed (``3d``) or before the branch shares were named so (``contrib_<branch>``) load unchanged,
their outputs under today's names.

Sessions are sized from the CPUs this process may use (`trd.runtime.threads`): ``intra_op`` threads
= that count, one inter-op thread, sequential execution, all graph optimisations.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..config import Config, legacy_branch, validate_config
from ..data.inputs import InputStats
from ..errors import CheckpointError, TRDError
from ..scoring.threshold import Thresholds
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
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TRDError(f"ONNX support needs the '{module}' package: pip install trd-anomaly (onnxruntime) or 'trd-anomaly[train]' (onnx, to export)") from None


def _providers(ort: ModuleType) -> list[str]:
    """CUDA when this onnxruntime build has it (CPU stays as the fallback), else CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session_options(ort: ModuleType, threads: int) -> Any:
    """Options of every session: ``threads`` intra-op threads, no inter-op parallelism."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


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
    _names: list[str]
    _keys: list[str]

    name = "onnxruntime"

    def __call__(self, rgb: np.ndarray, x3d: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"rgb": np.ascontiguousarray(rgb, dtype=np.float32), "x3d": np.ascontiguousarray(x3d, dtype=np.float32)}
        return dict(zip(self._keys, self.session.run(self._names, feeds), strict=True))

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]


def open_onnx(path: str | Path, threads: int | None = None) -> OrtEngine:
    """Load a ``trd export`` file; CheckpointError for a missing, unreadable or foreign file."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "ONNX file not found")
    n = inference_threads(threads)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(ort, n), providers=_providers(ort))
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a readable ONNX model (truncated or corrupt?): {first}") from None
    meta = read_metadata(path, session.get_modelmeta().custom_metadata_map)
    cfg, thresholds, branches, inputs, scores = meta
    names = [o.name for o in session.get_outputs()]
    layouts = [output_names(branches, share, scored) for share in ("share", "contrib") for scored in (True, False)]
    if names not in layouts or [i.name for i in session.get_inputs()] != list(INPUT_NAMES):
        raise CheckpointError(path, f"ONNX graph does not have the trd inputs {list(INPUT_NAMES)} and outputs "
                                    f"{output_names(branches)}")
    current = [legacy_branch(b) for b in branches]
    keys = output_names(current, scored=len(names) == len(layouts[0]))
    return OrtEngine(path, session, cfg, thresholds, current, inputs, scores, n, names, keys)


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
