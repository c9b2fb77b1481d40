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

Start-up (issue 24): optimising the graph is most of the cost of a new session (the paper model:
~6.4 s of CPU and 3.3 GB, against 0.65 s and 0.4 GB to load the optimised graph). Given the file's
identity (its sha256), the first session saves its optimised graph (weights as external data, which
onnxruntime maps rather than copies) in the user cache (`optimised_dir`) and later sessions load it
with optimisations off. onnxruntime's documentation warns that a graph optimised at this level may
only run where it was made (its layout transformations use this CPU's vector width), so the saved
graph is keyed by what it depends on (`_saved_graph_key`): the file's identity, the onnxruntime
version and build, the session settings (threads, providers, optimisation level) and this CPU
(model and instruction-set flags); a change of any of them builds a new one. Only sessions of the CPU
provider at fp32 are saved (a graph optimised for another provider holds that provider's nodes). The folder keeps the most
recently used graphs up to :data:`KEEP_BYTES`; it can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..config import Config, legacy_branch, validate_config
from ..data.cache import default_cache_dir
from ..data.inputs import InputStats
from ..data.identity import model_sha256
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
    "source_sha256": "trd.source_sha256",  # sha256 of the model.pt it was exported from (optional)
    "border_check": "trd.border_check",  # where the validation maxima sit (optional; `trd test`)
}
#: Bytes of saved optimised graphs kept in `optimised_dir`: the most recently used ones up to this
#: size (and always the newest), the others are removed. A paper-sized graph is ~1.75 GB.
KEEP_BYTES = 8 * 2**30
#: A half-written saved graph (a killed process) older than this is removed.
_STALE_S = 3600


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
    sha = model_sha256(path, path.with_name(path.name + ".data"), missing_ok=True)  # remembered, not re-read
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
                 max_batch: int = 8, log: Callable[[str], None] | None = None,
                 identity: str | None = None) -> tuple[Any, Placement]:
    """A session on ``path`` and where it runs: the one place that picks the execution provider.

    ``ep``/``precision``: `trd.runtime.providers` (``auto`` takes the first provider that starts).
    A provider that onnxruntime replaces by the CPU (it only logs when one cannot start) or that
    fails its first run is refused, naming why; CheckpointError for a file that is not a model.
    ``max_batch``: the largest batch (TensorRT's engines are built for a range of batch sizes).
    ``identity``: the file's sha256, under which the CPU provider's optimised graph is saved.
    """
    base, ov_device = parse_ep(ep)
    problems = []
    for key in candidates(ep, precision, ort.get_available_providers(), f"onnxruntime {ort.__version__}"):
        if base == "auto" and key in ("cuda", "tensorrt") and _no_gpu_device():
            problems.append(f"{PROVIDERS[key]}: no GPU device here")
            continue
        try:
            session, place = _start(ort, path, key, precision, threads, ov_device, max_batch, log, identity)
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
           max_batch: int, log: Callable[[str], None] | None, identity: str | None = None) -> tuple[Any, Placement]:
    """A session of provider ``key`` that runs, or _Refused saying why."""
    if key in ("cuda", "tensorrt") and hasattr(ort, "preload_dlls"):
        with contextlib.suppress(Exception):  # CUDA and cuDNN from pip's nvidia packages, where installed
            ort.preload_dlls()
    graph = fp16_graph(path, log) if precision == "fp16" and key in ("cpu", "cuda") else path
    extra = _trt_settings(path, precision, max_batch) if key == "tensorrt" else {}
    place = placement(key, precision, threads=threads, ov_device=ov_device, **extra)
    try:
        try:
            if key == "cpu" and graph == path:  # the saved optimised graph where there is one
                session = cpu_session(ort, path, threads, identity, list(place.providers))
            else:
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
    #: sha256 of the model.pt the file was exported from (None: exported by an older trd).
    source_sha256: str | None = None
    #: What model.pt's ``extra`` record says that scoring uses: ``validation_scores``, ``inputs``,
    #: ``border_check`` (those the file has).
    extra: dict[str, Any] = field(default_factory=dict)

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


def optimised_dir() -> Path:
    """Where saved optimised graphs live: beside the preprocessing cache (``$TRD_CACHE/../ort``)."""
    return default_cache_dir().parent / "ort"


def _this_cpu() -> str:
    """This machine's architecture, CPU model and instruction-set flags (what a layout-optimised graph
    may depend on)."""
    model = flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    return f"{platform.machine()}|{model}|{flags}"


def _saved_graph_key(ort: ModuleType, identity: str, opts: Any, providers: list[str]) -> str:
    """The name of the saved optimised graph of a file with content ``identity`` in sessions like this one."""
    parts = [identity, ort.__version__, getattr(ort, "get_build_info", lambda: "")(), providers,
             opts.intra_op_num_threads, opts.inter_op_num_threads, str(opts.execution_mode),
             str(opts.graph_optimization_level), _this_cpu()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _tidy(folder: Path) -> None:
    """Keep the most recently used saved graphs up to KEEP_BYTES, and no stale half-written one."""
    with contextlib.suppress(OSError):
        entries = [p for p in folder.iterdir() if p.is_dir()]
        saved = sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
        stale = [p for p in entries if p.name.startswith(".") and time.time() - p.stat().st_mtime > _STALE_S]
        total = 0
        for entry in saved:
            total += sum(f.stat().st_size for f in entry.iterdir())
            if total > KEEP_BYTES and entry is not saved[0]:
                stale.append(entry)
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)


def cpu_session(ort: ModuleType, path: Path, threads: int, identity: str | None, providers: list[Any]) -> Any:
    """A session of ``path`` on the CPU provider (``providers``): from its saved optimised graph when
    ``identity`` (the file's sha256) is given and one exists, else optimised here (and saved when
    ``identity``)."""
    opts = session_options(ort, threads)
    if identity is None:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    folder = optimised_dir()
    saved = folder / _saved_graph_key(ort, identity, opts, providers)
    if (saved / "model.onnx").is_file():
        fast = session_options(ort, threads)
        fast.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(saved / "model.onnx"), sess_options=fast, providers=providers)
            with contextlib.suppress(OSError):
                os.utime(saved)  # recently used
            return session
        except Exception:  # noqa: BLE001 - damaged (disk error, hand edits): made again below
            shutil.rmtree(saved, ignore_errors=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".", suffix=".tmp", dir=folder))
    except OSError:  # a read-only cache: optimise every time
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    opts.optimized_model_filepath = str(staged / "model.onnx")
    opts.log_severity_level = 3  # not its warning that such a graph fits this machine only: the key says so
    opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.onnx.data")
    opts.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception:  # noqa: BLE001 - e.g. a full cache disk: without saving (a bad file fails there too)
        shutil.rmtree(staged, ignore_errors=True)
        return ort.InferenceSession(str(path), sess_options=session_options(ort, threads), providers=providers)
    try:
        os.replace(staged, saved)  # atomic: a reader sees a complete graph or none
    except OSError:  # another process saved it first
        shutil.rmtree(staged, ignore_errors=True)
    _tidy(folder)
    return session



def open_onnx(path: str | Path, threads: int | None = None, identity: str | None = None, *, ep: str = "auto",
              precision: str = "fp32", max_batch: int = 8, log: Callable[[str], None] | None = None) -> OrtEngine:
    """Load a ``trd export`` file on execution provider ``ep`` at ``precision`` (`open_session`);
    CheckpointError for a missing, unreadable or foreign file, ConfigError for a provider that
    cannot run it here. ``identity``: the file's sha256 (`trd.data.identity.model_sha256` of it and
    its ``.data``); with it, a CPU session's optimised graph is saved once and loaded from then on
    (the module's docstring)."""
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "ONNX file not found")
    n = inference_threads(threads)
    session, place = open_session(ort, path, n, ep, precision, max_batch=max_batch, log=log, identity=identity)
    custom = session.get_modelmeta().custom_metadata_map
    meta = read_metadata(path, custom)
    cfg, thresholds, branches, inputs, scores = meta
    names = [o.name for o in session.get_outputs()]
    layouts = [output_names(branches, share, scored) for share in ("share", "contrib") for scored in (True, False)]
    if names not in layouts or [i.name for i in session.get_inputs()] != list(INPUT_NAMES):
        raise CheckpointError(path, f"ONNX graph does not have the trd inputs {list(INPUT_NAMES)} and outputs "
                                    f"{output_names(branches)}")
    current = [legacy_branch(b) for b in branches]
    keys = output_names(current, scored=len(names) == len(layouts[0]))
    source, extra = _source_record(path, custom, inputs, scores)
    return OrtEngine(path, session, cfg, thresholds, current, inputs, scores, n, place, names, keys, source, extra)


def _source_record(path: Path, meta: dict[str, str], inputs: InputStats | None,
                   scores: list[float] | None) -> tuple[str | None, dict[str, Any]]:
    """The model.pt an export came from (its sha256) and the part of model.pt's ``extra`` it carries."""
    try:
        border = json.loads(meta.get(META_KEYS["border_check"], "null"))
    except ValueError as exc:
        raise CheckpointError(path, f"damaged trd metadata in the ONNX file: {exc}") from None
    extra = {"validation_scores": scores, "inputs": None if inputs is None else inputs.to_dict(), "border_check": border}
    return meta.get(META_KEYS["source_sha256"]) or None, {k: v for k, v in extra.items() if v is not None}


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
