"""ONNX export of the detector; `trd.runtime.ort` runs the exports (without torch).

The exported graph is the whole :class:`~trd.model.detector.Detector`: teachers, students and the
scorer (z-scoring, fusion, exact Gaussian blur, max), so a deployment needs neither PyTorch nor
scipy. Inputs ``rgb`` and ``x3d`` are B x 3 x S x S float32, ImageNet-normalised exactly like
:class:`~trd.data.dataset.PairDataset` gives them (S fixed, B dynamic). Outputs carry the keys of
``Detector.forward``: ``anomaly_map``, ``score``, ``share_<branch>``, ``map_<branch>`` and
``scored_<branch>`` (`trd.runtime.ort.output_names`; older layouts load unchanged).

The file describes itself: ``metadata_props`` hold the resolved config, the thresholds (with what
they promise and any warning, `trd.scoring.threshold.Thresholds.to_dict`),
the branch names, the input normalisation and the trd version (keys :data:`META_KEYS`), so
``trd predict --onnx`` needs nothing else. It also names the ``model.pt`` it came from by content
(``trd.source_sha256``): a prediction folder started with the model.pt continues with its export and
the reverse (`trd.workflows.predict`), and the engine's cached export is used without reading
model.pt, which is why the export also carries model.pt's border check (``trd.border_check``, for
``trd test``).

Exporter: the TorchScript-based one (``dynamo=False``). It is deprecated in torch >= 2.9 but still
shipped; it traces this model exactly (maps within 1e-5 of PyTorch), keeps the batch axis
dynamic via ``dynamic_axes`` even when traced at batch 1, and takes seconds where the dynamo
exporter took a minute on the tiny test model.

Size: a model with more than :data:`EXTERNAL_DATA_FROM` of weights (the paper model: two WRN-50-2
teachers + two students, about 1.63 GiB of float32) is written as ``<name>`` (the graph) plus
``<name>.data`` (the weights, ONNX external data; keep the two files together); smaller models as one
file. Weights are written straight from the model's tensors, one at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import Config, without_machine_paths
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..data.identity import model_sha256
from ..detector import Detector, load_detector
from ..errors import ConfigError, write_error
from ..runtime.ort import FORMAT, FORMAT_VERSION, INPUT_NAMES, META_KEYS, output_names, require
from ..scoring.threshold import Thresholds

#: Opset written by default: every op used here exists there, and onnxruntime >= 1.12, TensorRT
#: >= 8.6 and OpenVINO run it.
DEFAULT_OPSET = 17
#: ONNX IR version written, whatever the onnx package would default to (onnx 1.23 writes 14, which
#: the OpenVINO and GPU builds of onnxruntime 1.24/1.31 refuse; 8 loads in every build).
IR_VERSION = 8
#: Opsets the TorchScript exporter can write for this graph (Resize with align_corners and
#: GatherElements need 11; the exporter's own maximum is 20).
OPSET_RANGE = range(11, 21)
#: Models with more weight bytes than this are exported with their weights streamed into an external
#: ``<name>.data`` file: the export then holds the weights once (the paper model: 9.2 -> 3.5 GB peak),
#: and models past protobuf's 2 GiB limit work too. Smaller models get one self-contained file.
EXTERNAL_DATA_FROM = 256 * 2**20


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


def _metadata(cfg: Config, thresholds: Thresholds, branches: list[str], extra: dict[str, Any],
              source_sha256: str, keep_paths: bool) -> dict[str, str]:
    """The metadata_props; without this machine's absolute paths (the config's dataset root, the
    thresholds' source, ...) unless ``keep_paths``."""
    shown = (lambda value: value) if keep_paths else without_machine_paths
    return {
        META_KEYS["source_sha256"]: source_sha256,
        META_KEYS["border_check"]: json.dumps(extra.get("border_check"), sort_keys=True),
        META_KEYS["validation_scores"]: json.dumps(extra.get("validation_scores")),
        META_KEYS["inputs_seen"]: json.dumps(shown(extra.get("inputs")), sort_keys=True),
        META_KEYS["format"]: FORMAT,
        META_KEYS["format_version"]: FORMAT_VERSION,
        META_KEYS["version"]: __version__,
        META_KEYS["config"]: json.dumps(shown(cfg.to_dict()), sort_keys=True),
        META_KEYS["thresholds"]: json.dumps(shown(thresholds.to_dict()), sort_keys=True),
        META_KEYS["branches"]: json.dumps(branches),
        META_KEYS["input"]: json.dumps(input_spec(cfg.data.image_size), sort_keys=True),
    }


def _trace(graph: nn.Module, names: list[str], example: tuple[Tensor, Tensor], path: Path, opset: int,
           inline: bool) -> None:
    """Write the traced graph to ``path`` (batch axis dynamic). ``inline``: the weights inside,
    constant-folded; else the weights stay graph inputs named by their state-dict keys (no copy)."""
    with warnings.catch_warnings():
        # Only the legacy exporter's deprecation notices; TracerWarnings (values frozen into the
        # graph) stay visible.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        # The blur's test of the map size is frozen on purpose: an export's image size is fixed.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"trd\.scoring\.maps")
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=names, do_constant_folding=inline,
                          export_params=inline, keep_initializers_as_inputs=not inline,
                          dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, *names)})


def _attach_weights(onnx: Any, graph_file: Path, data_name: str, weights: dict[str, Tensor]) -> Any:
    """The graph of ``graph_file`` with its weight inputs turned into initializers whose data is
    streamed, tensor by tensor, into ``data_name`` beside it (ONNX external data, 64-byte aligned).
    Only one tensor's bytes are copied at a time, so the export holds the weights once."""
    model = onnx.load(str(graph_file))  # the graph alone: a few MB
    kept = [v for v in model.graph.input if v.name in INPUT_NAMES]
    with (graph_file.parent / data_name).open("wb") as fh:
        for value in model.graph.input:
            if value.name in INPUT_NAMES:
                continue
            array = weights[value.name].detach().contiguous().numpy()
            fh.write(b"\0" * (-fh.tell() % 64))
            offset = fh.tell()
            fh.write(array.tobytes())
            tensor = onnx.TensorProto(name=value.name, dims=array.shape,
                                      data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype),
                                      data_location=onnx.TensorProto.EXTERNAL)
            for key, item in (("location", data_name), ("offset", offset), ("length", array.nbytes)):
                tensor.external_data.add(key=key, value=str(item))
            model.graph.initializer.append(tensor)
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model


def export_onnx(model_path: Path, out: Path, *, opset: int | None = None, batch: int = 1,
                log: Callable[[str], None] | None = None, source_sha256: str | None = None,
                keep_paths: bool = False) -> Path:
    """Export ``model_path`` (a ``model.pt``) to ``out``, self-describing, validated, written atomically.

    An export leaves this machine: its metadata carries no absolute path of it (the dataset root
    becomes its folder name), unless ``keep_paths`` (the export cache beside a model, which stands
    in for the model file on this machine: `trd test` finds the dataset through it).
    ``batch`` is the size of the example batch that is traced; the graph accepts any batch size.
    ``log`` is told once the model has loaded (an unreadable model fails before any message).
    The file (and ``<out>.data`` when the weights exceed :data:`EXTERNAL_DATA_FROM`) is staged in a
    temporary folder beside ``out``, checked with ``onnx.checker``, then moved into place with
    ``os.replace``: a reader sees the old export or the complete new one. The weights are held once
    at a time (the paper model: ~40 s, peak ~3.8 GB instead of 9.2 GB, benchmarks/README.md).
    ``source_sha256``: model_path's sha256 when the caller knows it (else it is computed). An ``out``
    that cannot be written is an OutputError (exit code 3), before the model is loaded.
    """
    onnx = require("onnx")
    opset = DEFAULT_OPSET if opset is None else opset
    if opset not in OPSET_RANGE:
        raise ConfigError(f"ONNX opset {opset} is not supported; use {OPSET_RANGE.start}..{OPSET_RANGE.stop - 1}")
    if batch < 1:
        raise ConfigError(f"export batch must be >= 1, got {batch}")
    out = Path(out)
    try:  # a folder that cannot take the export is reported before the model is loaded
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        raise write_error(out, exc) from None
    detector, cfg, thresholds, extra = load_detector(model_path, "cpu")
    source_sha256 = source_sha256 or model_sha256(Path(model_path))
    if log is not None:
        log(f"exporting {model_path} to ONNX: {out}")
    size = cfg.data.image_size
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(batch, 3, size, size, generator=generator),
               torch.randn(batch, 3, size, size, generator=generator))
    data_name = out.name + ".data"
    names = output_names(detector.branches)
    graph = _TupleOutputs(detector, names).eval()  # the exporter restores this mode afterwards
    weights = graph.state_dict(keep_vars=True)
    external = sum(t.numel() * t.element_size() for t in weights.values()) > EXTERNAL_DATA_FROM
    header = onnx.ModelProto(ir_version=IR_VERSION, producer_name="trd", producer_version=__version__,
                             doc_string=f"TRD anomaly detector ({cfg.model.variant}, {cfg.model.backbone}, {size} px)")
    for key, value in _metadata(cfg, thresholds, detector.branches, extra, source_sha256, keep_paths).items():
        header.metadata_props.add(key=key, value=value)
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent) as tmp:
            staged = Path(tmp) / out.name
            _trace(graph, names, example, staged, opset, inline=not external)
            if external:
                model = _attach_weights(onnx, staged, data_name, weights)
                model.MergeFrom(header)
                onnx.save_model(model, str(staged))
                del model
            else:
                # Protobuf merges a message's fields read later into those read before: the header's
                # strings replace the exporter's, its metadata_props are added. Appending it to the
                # file names the export without loading the weights again.
                with staged.open("ab") as fh:
                    fh.write(header.SerializeToString())
            del graph, weights, detector  # the weights are freed before the checker reads the file back
            onnx.checker.check_model(str(staged), full_check=True)  # path-based: works past 2 GiB
            if external:
                os.replace(Path(tmp) / data_name, out.parent / data_name)
            os.replace(staged, out)
    except OSError as exc:  # a full disk, or the folder turned read-only meanwhile
        raise write_error(out, exc) from None
    if not external:
        with contextlib.suppress(FileNotFoundError):
            (out.parent / data_name).unlink()  # weights of an earlier, larger export to this path
    return out
