"""Reduced precision without torch: the float16 copy of an export, and where such copies are kept.

``--precision fp16`` on the CPU and CUDA providers runs a float16 copy of the graph (weights and
arithmetic in float16, inputs and outputs still float32), made once per model with onnxruntime's
own converter (``onnxruntime.transformers.float16``, which needs the ``onnx`` package) and cached
beside the model, keyed by its content. TensorRT and OpenVINO take the float32 graph and a
precision setting instead (`trd.runtime.providers`). Either way the scores change: `trd test
--precision` reports by how much, against float32, in the same run.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..data.cache import default_cache_dir
from ..data.identity import model_sha256
from ..errors import OutputError, TRDError


def cache_folder(preferred: Path, kind: str) -> Path:
    """``preferred`` when it can be created and written, else the user cache's ``kind`` folder
    (``$TRD_CACHE/../<kind>``, ``~/.cache/trd/<kind>``); OutputError when neither can."""
    problems = []
    for folder in (preferred, default_cache_dir().parent / kind):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
            return folder
        except OSError as exc:
            problems.append(f"{folder}: {exc.strerror or exc}")
    raise OutputError(preferred, f"cannot write a {kind} cache here or in the user cache ({'; '.join(problems)})")


def fp16_graph(path: Path, log: Callable[[str], None] | None = None) -> Path:
    """The float16 copy of the export ``path``, made on first use.

    Kept as ``<stem>-fp16-<sha256[:16]>.onnx`` in ``.onnx-cache/`` beside the export (the export's
    own folder when it already is one), else in the user cache; copies of earlier contents of the
    same export are removed from the folder beside it.
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:
        raise TRDError("--precision fp16 on the CPU or CUDA provider converts the graph with the 'onnx' package: "
                       "pip install onnx (the [gpu] and [train] installs have it)") from None
    sha = model_sha256(path, path.with_name(path.name + ".data"), missing_ok=True)  # remembered, not re-read
    beside = path.parent if path.parent.name == ".onnx-cache" else path.parent / ".onnx-cache"
    folder = cache_folder(beside, "onnx")
    target = folder / f"{path.stem}-fp16-{sha[:16]}.onnx"
    if target.is_file():
        return target
    if log is not None:
        log(f"converting {path} to float16: {target} (once per model)")
    model = onnx.load(str(path))
    atomic_write_bytes(target, convert_float_to_float16(model, keep_io_types=True).SerializeToString())
    if folder == beside:
        for old in folder.glob(f"{path.stem}-fp16-*.onnx"):
            if old != target:
                with contextlib.suppress(OSError):
                    old.unlink()
    return target
