"""ONNX export of the detector, and an onnxruntime runner that stands in for it.

The exported graph is the whole :class:`~trd.model.detector.Detector`: teachers, students and the
scorer (z-scoring, fusion, exact Gaussian blur, max), so a deployment needs neither PyTorch nor
scipy. Inputs ``rgb`` and ``x3d`` are B x 3 x S x S float32, ImageNet-normalised exactly like
:class:`~trd.data.dataset.PairDataset` gives them (S fixed, B dynamic). Outputs carry the keys of
``Detector.forward``: ``anomaly_map``, ``score``, ``share_<branch>`` and ``map_<branch>`` (exports of
trd before the branch shares were named so call them ``contrib_<branch>``; they load unchanged).

The file describes itself: ``metadata_props`` hold the resolved config, the thresholds (with what
they promise and any warning, `trd.scoring.threshold.Thresholds.to_dict`),
the branch names, the input normalisation and the trd version (keys :data:`META_KEYS`), so
``trd predict --onnx`` needs nothing else.

Exporter: the TorchScript-based one (``dynamo=False``). It is deprecated in torch >= 2.9 but still
shipped; it traces this model exactly (maps within 1e-5 of PyTorch), keeps the batch axis
dynamic via ``dynamic_axes`` even when traced at batch 1, and takes seconds where the dynamo
exporter took a minute on the tiny test model.

Size: protobuf cannot serialise a message over 2 GiB. The paper model (two WRN-50-2 teachers +
two students, about 1.63 GiB of float32) fits in one file; anything larger than
:data:`SINGLE_FILE_LIMIT` is written with its weights in ``<name>.data`` beside ``<name>``
(ONNX external data; keep the two files together).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..checkpoint import legacy_branch
from ..config import Config, validate_config
from ..data.inputs import InputStats
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..detector import Detector, load_detector
from ..errors import CheckpointError, ConfigError, TRDError
from ..scoring.infer import Runner
from ..scoring.threshold import Thresholds

#: Opset written by default: every op used here exists there, and onnxruntime >= 1.12, TensorRT
#: >= 8.6 and OpenVINO run it.
DEFAULT_OPSET = 17
#: Opsets the TorchScript exporter can write for this graph (Resize with align_corners and
#: GatherElements need 11; the exporter's own maximum is 20).
OPSET_RANGE = range(11, 21)
#: Weights beyond this many bytes go to an external ``.data`` file (protobuf's 2 GiB limit, minus
#: headroom for the graph and the metadata).
SINGLE_FILE_LIMIT = 2**31 - 2**26
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
}


def _require(module: str) -> ModuleType:
    """Import an optional dependency, or explain how to install it (a one-line TRDError)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TRDError(f"ONNX support needs the '{module}' package: pip install 'trd-anomaly[onnx]'") from None


class _TupleOutputs(nn.Module):
    """The detector with its dict outputs as a tuple in a fixed order (ONNX outputs are positional)."""

    def __init__(self, detector: Detector, names: list[str]) -> None:
        super().__init__()
        self.detector = detector
        self.names = names

    def forward(self, rgb: Tensor, x3d: Tensor) -> tuple[Tensor, ...]:
        out = self.detector(rgb, x3d)
        return tuple(out[name] for name in self.names)


def input_spec(image_size: int) -> dict[str, Any]:
    """What the graph expects of each input (stored as ``trd.input``)."""
    return {"names": list(INPUT_NAMES), "layout": "NCHW", "dtype": "float32", "channels": 3,
            "size": [image_size, image_size], "range": "RGB in [0, 1], then (x - mean) / std per channel",
            "mean": [float(v) for v in IMAGENET_MEAN], "std": [float(v) for v in IMAGENET_STD]}


def _metadata(cfg: Config, thresholds: Thresholds, branches: list[str], inputs: dict | None) -> dict[str, str]:
    return {
        META_KEYS["inputs_seen"]: json.dumps(inputs, sort_keys=True),
        META_KEYS["format"]: FORMAT,
        META_KEYS["format_version"]: FORMAT_VERSION,
        META_KEYS["version"]: __version__,
        META_KEYS["config"]: json.dumps(cfg.to_dict(), sort_keys=True),
        META_KEYS["thresholds"]: json.dumps(thresholds.to_dict(), sort_keys=True),
        META_KEYS["branches"]: json.dumps(branches),
        META_KEYS["input"]: json.dumps(input_spec(cfg.data.image_size), sort_keys=True),
    }


def output_names(branches: list[str], share: str = "share") -> list[str]:
    """Graph outputs, in the order of ``Detector.forward``'s keys (``share="contrib"``: older exports)."""
    return ["anomaly_map", "score", *(f"{share}_{b}" for b in branches), *(f"map_{b}" for b in branches)]


def _trace(detector: Detector, example: tuple[Tensor, Tensor], path: Path, opset: int) -> None:
    """Write the traced graph to ``path`` (batch axis dynamic, initializers constant-folded)."""
    names = output_names(detector.branches)
    graph = _TupleOutputs(detector, names).eval()  # the exporter restores this mode afterwards
    with warnings.catch_warnings():
        # Only the legacy exporter's deprecation notices; TracerWarnings (values frozen into the
        # graph) stay visible.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=names, do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, *names)})


def _weight_bytes(model: Any) -> int:
    """Serialised size of the initializers (without copying their data out of the proto)."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def export_onnx(model_path: Path, out: Path, *, opset: int | None = None, batch: int = 1) -> Path:
    """Export ``model_path`` (a ``model.pt``) to ``out``, self-describing, validated, written atomically.

    ``batch`` is the size of the example batch that is traced; the graph accepts any batch size.
    The file (and ``<out>.data`` when the weights exceed :data:`SINGLE_FILE_LIMIT`) is staged in a
    temporary folder beside ``out``, checked with ``onnx.checker``, then moved into place with
    ``os.replace``: a reader sees the old export or the complete new one.
    """
    onnx = _require("onnx")
    opset = DEFAULT_OPSET if opset is None else opset
    if opset not in OPSET_RANGE:
        raise ConfigError(f"ONNX opset {opset} is not supported; use {OPSET_RANGE.start}..{OPSET_RANGE.stop - 1}")
    if batch < 1:
        raise ConfigError(f"export batch must be >= 1, got {batch}")
    detector, cfg, thresholds, extra = load_detector(model_path, "cpu")
    size = cfg.data.image_size
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(batch, 3, size, size, generator=generator),
               torch.randn(batch, 3, size, size, generator=generator))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data_name = out.name + ".data"
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        traced, staged = Path(tmp) / "traced.onnx", Path(tmp) / out.name
        _trace(detector, example, traced, opset)
        branches = detector.branches
        del detector  # the proto below holds a second copy of the weights
        model = onnx.load(str(traced))  # also reads any external data the exporter wrote
        model.producer_name, model.producer_version = "trd", __version__
        model.doc_string = f"TRD anomaly detector ({cfg.model.variant}, {cfg.model.backbone}, {size} px)"
        for key, value in _metadata(cfg, thresholds, branches, extra.get("inputs")).items():
            model.metadata_props.add(key=key, value=value)
        external = _weight_bytes(model) > SINGLE_FILE_LIMIT
        onnx.save_model(model, str(staged), save_as_external_data=external, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        del model
        onnx.checker.check_model(str(staged), full_check=True)  # path-based: works past 2 GiB
        if external:
            os.replace(Path(tmp) / data_name, out.parent / data_name)
        os.replace(staged, out)
    if not external:
        with contextlib.suppress(FileNotFoundError):
            (out.parent / data_name).unlink()  # weights of an earlier, larger export to this path
    return out


def _providers(ort: ModuleType) -> list[str]:
    """CUDA when this onnxruntime build has it (CPU stays as the fallback), else CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _read_metadata(path: Path, meta: dict[str, str]) -> tuple[Config, Thresholds, list[str], InputStats | None]:
    """Config, thresholds, branches and training-input statistics from an export's metadata;
    CheckpointError if they are not trd's."""
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
        return cfg, Thresholds.from_dict(raw["thresholds"]), branches, inputs
    except (KeyError, ValueError, TypeError, AttributeError, TRDError) as exc:
        raise CheckpointError(path, f"damaged trd metadata in the ONNX file: {exc}") from None


def load_onnx_runner(path: Path) -> tuple[Runner, Config, Thresholds, InputStats | None]:
    """An onnxruntime session of a ``trd export`` file as ``(rgb, x3d) -> dict of tensors``, and its
    config, thresholds and training-input statistics (None for exports that predate them).

    The runner accepts torch tensors on any device and returns CPU float32 tensors under the keys
    of ``Detector.forward``, so :func:`trd.scoring.predict.predict_samples` runs it unchanged.
    A missing, unreadable or foreign file raises :class:`CheckpointError`.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "ONNX file not found")
    try:
        session = ort.InferenceSession(str(path), providers=_providers(ort))
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"not a readable ONNX model (truncated or corrupt?): {first}") from None
    cfg, thresholds, branches, inputs = _read_metadata(path, session.get_modelmeta().custom_metadata_map)
    names = [o.name for o in session.get_outputs()]
    if (names not in (output_names(branches), output_names(branches, "contrib"))
            or [i.name for i in session.get_inputs()] != list(INPUT_NAMES)):
        raise CheckpointError(path, f"ONNX graph does not have the trd inputs {list(INPUT_NAMES)} and outputs "
                                    f"{output_names(branches)}")
    # Exports written before the geometry branch was renamed call it "3d", and before the branch
    # shares were named so, their outputs "contrib_<branch>".
    keys = output_names([legacy_branch(b) for b in branches])

    def run(rgb: Tensor, x3d: Tensor) -> dict[str, Tensor]:
        feeds = {name: t.detach().to("cpu", torch.float32).contiguous().numpy()
                 for name, t in zip(INPUT_NAMES, (rgb, x3d))}
        return {key: torch.from_numpy(value) for key, value in zip(keys, session.run(names, feeds))}

    return run, cfg, thresholds, inputs
