"""Which engine scores: the fastest correct one by default, the user's choice when asked.

``engine="auto"`` (test, predict, serve): on a CPU, onnxruntime when it is installed: a ``model.pt``
is exported to ONNX on first use and the export is cached beside the model, keyed by the model's
content (``RUN/.onnx-cache/<stem>-<sha256[:16]>.onnx``; a retrained model gets a new export, the
old one is removed), or in the user cache (``$TRD_CACHE/../onnx``) where the model's folder cannot
be written (a read-only mount); elsewhere, or for ``--explain`` (which needs the torch detector),
torch. ``"onnx"`` and ``"torch"`` force one. Both engines give the same outputs within 1e-5
(`tests/export`); both use as many threads as the process has CPUs (`trd.runtime.threads`).

Start-up (issue 24): once the export is cached, a ``model.pt`` is scored without importing torch or
reading model.pt: the export carries everything scoring needs (config, thresholds, validation
scores, input statistics, border check) and names the model.pt it came from by content
(``trd.source_sha256``); the model's sha256 is remembered against its file's identity
(`trd.data.identity.model_sha256`), and onnxruntime loads its saved optimised graph
(`trd.runtime.ort`). Whether a GPU could be used is judged without torch where the answer is
certain (`_no_cuda_here`). The export costs about as much as loading the model twice, once per model
(the demo model: ~2 s; the paper model: see benchmarks/README.md).

``ep`` and ``precision`` (`OrtChoice`) choose onnxruntime's execution provider and precision
(`trd.runtime.providers`); asking for one (other than ``auto``/``fp32``) means onnxruntime.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..data.cache import default_cache_dir
from ..data.identity import model_sha256
from ..data.inputs import InputStats
from ..errors import CheckpointError, ConfigError, OutputError, require_torch
from ..runtime.ort import OrtEngine, open_onnx
from ..runtime.providers import check_precision
from ..runtime.threads import inference_threads
from ..scoring.threshold import Thresholds

ENGINES = ("auto", "onnx", "torch")
Log = Callable[[str], None]
Engine = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class LoadedModel:
    """An engine and what the model file says about itself."""

    engine: Engine
    name: str  # "onnxruntime" | "torch"
    branches: list[str]
    config: Config
    thresholds: Thresholds
    reference: InputStats | None
    files: tuple[Path, ...]  # the file(s) the user gave: their content identifies the model
    sha256: str  # of those files
    extra: dict[str, Any] = field(default_factory=dict)  # model.pt's extra record (an export: the part it carries)
    detector: Any = None  # the torch Detector when the engine is torch
    #: sha256 of the model.pt this model is (itself, or the one an export came from; None: an export
    #: of an older trd, which does not say): the same model in another form has the same.
    source_sha256: str | None = None
    provider: str = "CPUExecutionProvider"  # onnxruntime's execution provider, or the torch device
    precision: str = "fp32"
    onnx_path: Path | None = None  # the graph onnxruntime runs (an export, or the cached one of a model.pt)

    @property
    def validation_scores(self) -> list[float] | None:
        """Image scores of the good samples the thresholds were chosen on (None for older models)."""
        if self.extra.get("validation_scores") is not None:
            return list(self.extra["validation_scores"])
        return getattr(self.engine, "validation_scores", None)


def onnxruntime_available(export: bool = True) -> bool:
    """Whether onnxruntime (every install) and, with ``export``, onnx (the training install) can be imported."""
    try:
        importlib.import_module("onnxruntime")
        if export:
            importlib.import_module("onnx")
    except ImportError:
        return False
    return True


def _no_cuda_here() -> bool:
    """True where ``torch.cuda.is_available()`` is certainly False, known without importing torch:
    Linux without NVIDIA, ROCm or WSL GPU device nodes, and macOS (no CUDA builds)."""
    if sys.platform == "darwin":
        return True
    if sys.platform.startswith("linux"):
        nodes = [*Path("/dev").glob("nvidia*"), Path("/dev/kfd"), Path("/dev/dxg")]
        return not any(node.exists() for node in nodes)
    return False


@dataclass(frozen=True)
class OrtChoice:
    """How onnxruntime should run: execution provider (``--ep``), precision, largest batch."""

    ep: str = "auto"
    precision: str = "fp32"
    max_batch: int = 8

    @property
    def chosen(self) -> bool:
        """Whether the user asked for something only onnxruntime does."""
        return self.ep != "auto" or self.precision != "fp32"


def _export_folders(model_path: Path) -> tuple[Path, Path]:
    """Where the export of a model.pt is cached: beside it, else in the user cache."""
    return model_path.parent / ".onnx-cache", default_cache_dir().parent / "onnx"


def _export_name(model_path: Path, sha: str) -> str:
    return f"{model_path.stem}-{sha[:16]}.onnx"


def _open_cached(model_path: Path, sha: str, threads: int, choice: OrtChoice, log: Log) -> OrtEngine | None:
    """The cached export of ``model_path`` (content ``sha``), opened as ``choice`` says, without
    torch; None when there is none that names this model.pt as its source (none yet, or one of an
    older trd)."""
    for folder in _export_folders(model_path):
        target = folder / _export_name(model_path, sha)
        if not target.is_file():
            continue
        try:
            ort = _open(target, threads, choice, log)
        except CheckpointError:
            continue  # damaged: exported again
        if ort.source_sha256 == sha:
            return ort
    return None


def _open(path: Path, threads: int, choice: OrtChoice, log: Log) -> OrtEngine:
    """An export opened on ``choice``'s provider and precision (its optimised CPU graph saved under
    its identity)."""
    return open_onnx(path, threads, _export_identity(path), ep=choice.ep, precision=choice.precision,
                     max_batch=choice.max_batch, log=log)


def _export_identity(export: Path) -> str:
    return model_sha256(export, export.with_name(export.name + ".data"), missing_ok=True)


def cached_export(model_path: Path, sha: str, log: Log) -> Path:
    """The ONNX export of ``model_path`` (content ``sha``), made now (needs the training install).

    Beside the model when its folder is writable, else under the user cache
    (``$TRD_CACHE``/../onnx). Exports of earlier contents of the same model file are removed.
    OutputError where neither can be written.
    """
    from ..export.onnx import export_onnx

    name = _export_name(model_path, sha)
    for folder in _export_folders(model_path):
        target = folder / name
        try:
            export_onnx(model_path, target, log=lambda line: log(f"{line} (once per model, for onnxruntime)"),
                        source_sha256=sha, keep_paths=True)  # a stand-in for the model on this machine
        except OutputError as exc:
            log(f"{folder}: {exc.problem.split(';')[0]}; caching the export in the user cache instead")
            continue
        for old in folder.glob(f"{model_path.stem}-*.onnx*"):
            if not old.name.startswith(name):
                old.unlink(missing_ok=True)
        return target
    raise OutputError(model_path.parent, "cannot write an ONNX export beside the model or in the user cache; "
                                         "use --engine torch")


def load_model(model_path: Path | None = None, onnx_path: Path | None = None, *, engine: str = "auto",
               device: str = "auto", threads: int | None = None, explain: bool = False,
               choice: OrtChoice = OrtChoice(), log: Log = print) -> LoadedModel:
    """A model ready to score: ``model_path`` (model.pt) or ``onnx_path`` (an export).

    ``engine``: "auto" (the rule of this module), "onnx" or "torch". ``threads``: intra-op threads
    (default: the process's CPUs). ``explain`` needs the torch engine and a model.pt.
    ``choice``: onnxruntime's execution provider and precision (`trd.runtime.providers`).
    """
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if (model_path is None) == (onnx_path is None):
        raise ConfigError("give exactly one of --model (model.pt) or --onnx (exported file)")
    check_precision(choice.ep, choice.precision)
    if choice.chosen and (engine == "torch" or explain):
        raise ConfigError(f"--ep {choice.ep} and --precision {choice.precision} choose how onnxruntime runs, but "
                          f"{'--explain' if explain else '--engine torch'} runs the torch engine; leave them out")
    n = inference_threads(threads)
    if onnx_path is not None:
        if explain:
            raise ConfigError("--explain needs --model (model.pt holds the good inputs it needs; an ONNX file does not)")
        if engine == "torch":
            raise ConfigError("--onnx runs with onnxruntime: --engine torch needs --model (model.pt)")
        files = (Path(onnx_path), Path(onnx_path).with_name(Path(onnx_path).name + ".data"))
        sha = model_sha256(*files, missing_ok=True) if files[0].is_file() else ""
        ort = open_onnx(onnx_path, n, sha or None, ep=choice.ep, precision=choice.precision,
                        max_batch=choice.max_batch, log=log)
        return _onnx_model(ort, files, sha, ort.source_sha256)
    return _load_checkpoint(Path(model_path), engine, device, n, explain, choice, log)


def _onnx_model(ort: OrtEngine, files: tuple[Path, ...], sha: str, source: str | None) -> LoadedModel:
    return LoadedModel(ort, ort.name, ort.branches, ort.config, ort.thresholds, ort.inputs, files, sha, dict(ort.extra),
                       source_sha256=source, provider=ort.provider, precision=ort.precision, onnx_path=ort.path)


def _load_checkpoint(model_path: Path, engine: str, device: str, threads: int, explain: bool, choice: OrtChoice,
                     log: Log) -> LoadedModel:
    if engine == "onnx" and explain:
        raise ConfigError("--explain needs the torch engine (--engine torch or auto)")
    on_cpu = device == "cpu" or (device == "auto" and _no_cuda_here())
    wants_onnx = engine == "onnx" or choice.chosen or (engine == "auto" and not explain and on_cpu
                                                        and onnxruntime_available(export=False))
    if choice.chosen and not onnxruntime_available(export=False):
        raise ConfigError("--ep and --precision need onnxruntime: pip install 'trd-anomaly[cpu]' (or [gpu], [openvino])")
    if wants_onnx and model_path.is_file():  # (a missing file or a folder: the checkpoint loader says which)
        sha = model_sha256(model_path)
        ort = _open_cached(model_path, sha, threads, choice, log) if onnxruntime_available(export=False) else None
        if ort is not None:  # neither torch nor model.pt is read
            return _onnx_model(ort, (model_path,), sha, sha)
        require_torch()
        if (engine == "onnx" or choice.chosen) and not onnxruntime_available():
            raise ConfigError("--engine onnx, --ep and --precision need onnxruntime and onnx: "
                              "pip install 'trd-anomaly[cpu,train]'")
        if onnxruntime_available():
            try:
                export = cached_export(model_path, sha, log)
            except OutputError as exc:
                if engine == "onnx" or choice.chosen:
                    raise
                log(f"{exc}; scoring with torch")
                return _load_torch(model_path, "torch", "cpu", threads, explain, choice, log)
            return _onnx_model(_open(export, threads, choice, log), (model_path,), sha, sha)
    require_torch()
    return _load_torch(model_path, engine, device, threads, explain, choice, log)


def _load_torch(model_path: Path, engine: str, device: str, threads: int, explain: bool, choice: OrtChoice,
                log: Log = print) -> LoadedModel:
    """The model on the torch engine; with ``auto``, on onnxruntime where the device is a CPU after all."""
    import torch

    from ..detector import TorchEngine, load_detector, require_good_inputs
    from ..training.device import resolve_device

    dev = resolve_device(device)
    if (engine == "auto" and not explain and dev.type == "cpu" and device != "cpu" and model_path.is_file()
            and onnxruntime_available(export=False)):
        return _load_checkpoint(model_path, engine, "cpu", threads, explain, choice, log)
    torch.set_num_threads(threads)
    detector, cfg, thresholds, extra = load_detector(model_path, dev)
    if explain:
        require_good_inputs(detector, model_path)
    sha = model_sha256(model_path)
    return LoadedModel(TorchEngine(detector, dev, explain), TorchEngine.name, detector.branches, cfg, thresholds,
                       InputStats.from_dict(extra.get("inputs")), (model_path,), sha, dict(extra), detector,
                       source_sha256=sha, provider=str(dev))
