"""Python API mirroring the CLI: ``synth``, ``fit``, ``evaluate``, ``calibrate``, ``predict``, ``monitor``,
``export``, ``reproduce``, ``demo``, and ``import_weights`` / ``list_weights`` (``trd weights``).

Each job is a plain function in `trd.workflows` that runs the stages in an explicit order (data ->
model -> training -> scoring -> evaluation -> reporting); nothing happens in hidden callbacks::

    from trd import api
    from trd.config import load_config

    cfg = load_config(None, ["data.root=data/synth", "data.category=puck"])
    model = api.fit(cfg, "runs/puck")                   # train + calibrate -> runs/puck/model.pt
    result = api.evaluate(model)                        # metrics + runs/puck/report.html
    api.calibrate(model, data_root="more_good_scans")   # new thresholds -> runs/puck/model.calibrated.pt
    api.predict(model, "preds", input_dir=Path("scans"))  # predictions.jsonl + heatmaps
    api.merge_predictions(["preds/part-1", "preds/part-2"], "preds/all")  # parts of --shard runs
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .calibration import recalibrate as calibrate
from .evaluation.precision import precision_line
from .workflows.demo import demo
from .workflows.evaluate import decision_summary, evaluate, summary_line
from .workflows.fit import fit
from .workflows.monitor import monitor
from .workflows.predict import predict
from .workflows.reproduce import reproduce
from .workflows.shards import merge_predictions
from .workflows.weights import import_weights, list_weights

__all__ = ["calibrate", "decision_summary", "demo", "evaluate", "export", "fit", "import_weights", "list_weights",
           "merge_predictions", "monitor", "precision_line", "predict", "reproduce", "summary_line", "synth"]


def synth(out: str | Path, **kwargs: Any) -> dict:
    """Write the synthetic MVTec 3D-AD-layout dataset.

    Args:
        out: the dataset root to write (one folder per category, replaced whole).
        **kwargs: ``categories``, ``size``, ``n_train``, ``n_validation``, ``n_test_good``,
            ``n_test_per_defect``, ``seed`` (see `trd.data.synth.generate`).

    Returns:
        The sample counts as ``{category: {split: {defect: n}}}``.

    Example:
        >>> from trd import api
        >>> api.synth("data/synth", categories=["puck"], size=64)["puck"]["train"]  # doctest: +SKIP
        {'good': 40}
    """
    from .data.synth import generate

    return generate(Path(out), **kwargs)


def export(model_path: str | Path, out: str | Path, fmt: str = "onnx", log: Callable[[str], None] | None = None) -> Path:
    """Export the detector of a ``model.pt`` for deployment (needs the ``onnx`` extra).

    Args:
        model_path: a ``model.pt`` written by `fit`.
        out: the ONNX file to write (atomically; weights over 2 GiB go to ``<out>.data``).
        fmt: "onnx", the only format.
        log: told once the model has loaded and the export starts (None: silent).

    Returns:
        ``out`` as a Path. The file carries its config and thresholds in its metadata, so
        ``predict(None, ..., onnx_path=out)`` needs nothing else.

    Example:
        >>> from trd import api
        >>> api.export("runs/puck/model.pt", "puck.onnx")  # doctest: +SKIP
        PosixPath('puck.onnx')
    """
    if fmt != "onnx":
        raise ConfigError(f"unknown export format {fmt!r}; supported: onnx")
    from .export.onnx import export_onnx

    return export_onnx(Path(model_path), Path(out), log=log)
