"""Which engine scores: the fastest correct one by default, the user's choice when asked.

``engine="auto"`` (test, predict, serve): on a CPU, onnxruntime when it is installed: a ``model.pt``
is exported to ONNX on first use and the export is cached beside the model, keyed by the model's
content (``RUN/.onnx-cache/<stem>-<sha256[:16]>.onnx``; a retrained model gets a new export, the
old one is removed); elsewhere, or for ``--explain`` (which needs the torch detector), torch.
``"onnx"`` and ``"torch"`` force one. Both engines give the same outputs within 1e-5
(`tests/export`); both use as many threads as the process has CPUs (`trd.runtime.threads`).
``ep`` and ``precision`` choose onnxruntime's execution provider and precision
(`trd.runtime.providers`); asking for one (other than ``auto``/``fp32``) means onnxruntime.

The export costs about as much as loading the model twice once per model (the demo model: ~2 s;
the paper model: see benchmarks/README.md), then every run reuses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..data.cache import default_cache_dir
from ..data.identity import files_sha256
from ..data.inputs import InputStats
from ..errors import CheckpointError, ConfigError, OutputError
from ..runtime.ort import open_onnx
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
    extra: dict[str, Any] = field(default_factory=dict)  # model.pt's extra record ({} for ONNX)
    detector: Any = None  # the torch Detector when the engine is torch
    provider: str = "CPUExecutionProvider"  # onnxruntime's execution provider, or the torch device
    precision: str = "fp32"
    onnx_path: Path | None = None  # the graph onnxruntime runs (an export, or the cached one of a model.pt)

    @property
    def validation_scores(self) -> list[float] | None:
        """Image scores of the good samples the thresholds were chosen on (None for older models)."""
        if self.extra.get("validation_scores") is not None:
            return list(self.extra["validation_scores"])
        return getattr(self.engine, "validation_scores", None)


def onnxruntime_available() -> bool:
    """Whether onnxruntime and onnx (to export) can be imported here (onnxruntime: the [cpu], [gpu] or
    [openvino] install; onnx: the training install)."""
    try:
        importlib.import_module("onnxruntime")
        importlib.import_module("onnx")
    except ImportError:
        return False
    return True


def cached_export(model_path: Path, sha: str, log: Log) -> Path:
    """The ONNX export of ``model_path`` (content ``sha``), made on first use and reused after.

    Beside the model when its folder is writable, else under the user cache
    (``$TRD_CACHE``/../onnx). Exports of earlier contents of the same model file are removed.
    """
    from ..export.onnx import export_onnx

    name = f"{model_path.stem}-{sha[:16]}.onnx"
    for folder in (model_path.parent / ".onnx-cache", default_cache_dir().parent / "onnx"):
        target = folder / name
        if target.is_file():
            return target
        try:
            export_onnx(model_path, target, log=lambda line: log(f"{line} (once per model, for onnxruntime)"))
        except OutputError as exc:
            log(f"cannot cache the export there ({exc.problem}); trying the user cache")
            continue
        for old in folder.glob(f"{model_path.stem}-*.onnx*"):
            if not old.name.startswith(name):
                old.unlink(missing_ok=True)
        return target
    raise OutputError(model_path.parent, "cannot write an ONNX export beside the model or in the user cache; "
                                         "use --engine torch")


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


def _from_onnx(path: Path, threads: int, choice: OrtChoice, log: Log, files: tuple[Path, ...], sha: str,
               extra: dict[str, Any] | None = None) -> LoadedModel:
    ort = open_onnx(path, threads, ep=choice.ep, precision=choice.precision, max_batch=choice.max_batch, log=log)
    return LoadedModel(ort, ort.name, ort.branches, ort.config, ort.thresholds, ort.inputs, files, sha, extra or {},
                       provider=ort.provider, precision=ort.precision, onnx_path=path)


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
        return _from_onnx(Path(onnx_path), n, choice, log, files, files_sha256(*files, missing_ok=True))
    return _load_checkpoint(Path(model_path), engine, device, n, explain, choice, log)


def _load_checkpoint(model_path: Path, engine: str, device: str, threads: int, explain: bool, choice: OrtChoice,
                     log: Log) -> LoadedModel:
    import torch

    from ..detector import TorchEngine, load_detector, require_good_inputs
    from ..training.device import resolve_device

    if engine == "onnx" and explain:
        raise ConfigError("--explain needs the torch engine (--engine torch or auto)")
    dev = resolve_device(device)
    use_onnx = engine == "onnx" or (engine == "auto" and not explain and (dev.type == "cpu" or choice.chosen)
                                    and onnxruntime_available())
    if (engine == "onnx" or choice.chosen) and not onnxruntime_available():
        raise ConfigError("--engine onnx, --ep and --precision need onnxruntime and onnx: "
                          "pip install 'trd-anomaly[cpu,train]'")
    if not model_path.is_file():
        raise CheckpointError(model_path, "checkpoint file not found")
    sha = files_sha256(model_path)
    if use_onnx:
        from ..checkpoint import load_checkpoint

        extra = load_checkpoint(model_path, "model", mmap=True)["extra"]  # cheap: no weights are read
        return _from_onnx(cached_export(model_path, sha, log), threads, choice, log, (model_path,), sha, dict(extra))
    torch.set_num_threads(threads)
    detector, cfg, thresholds, extra = load_detector(model_path, dev)
    if explain:
        require_good_inputs(detector, model_path)
    return LoadedModel(TorchEngine(detector, dev, explain), TorchEngine.name, detector.branches, cfg, thresholds,
                       InputStats.from_dict(extra.get("inputs")), (model_path,), sha, dict(extra), detector,
                       provider=str(dev))
