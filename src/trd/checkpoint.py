"""Checkpoints: written atomically, validated on load, loadable in a new process.

Two kinds share one format:
- ``state.pt``  resumable training state (students, optimisers, schedulers, epoch, history; no RNG
  state: the only randomness, the shuffle, is seeded by (seed, epoch)), rewritten at epoch
  boundaries by wall time (``train.checkpoint_minutes``) and after the last epoch, so a killed run
  resumes at its last written epoch; removed once ``model.pt`` is written (unless
  ``train.keep_state``);
- ``model.pt``  the finished detector (students, validation statistics, thresholds, config) that
  ``trd test``, ``trd predict`` and ``trd export`` read.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_save
from .config import LEGACY_BRANCH_NAMES
from .errors import CheckpointError

FORMAT = "trd-checkpoint"
#: Version 2 renamed the geometry branch from "3d" to "geo"; version 1 files are converted on load.
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
#: Entries every checkpoint of a kind must hold (checked on load, so a hand-edited or foreign file
#: fails with its name instead of a KeyError deep in the loader).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("config", "students", "teachers", "scorer", "thresholds", "extra"),
    "train_state": ("config", "epoch", "history", "students", "optimizers", "schedulers"),
}


def save_checkpoint(path: str | Path, kind: str, payload: dict[str, Any]) -> None:
    """Save ``payload`` (tensors, dicts, numbers, strings) under a header naming its kind."""
    blob = {"format": FORMAT, "version": VERSION, "kind": kind, **payload}
    atomic_save(path, lambda fh: torch.save(blob, fh))


def load_checkpoint(path: str | Path, kind: str, map_location: str | torch.device = "cpu",
                    *, mmap: bool = False) -> dict[str, Any]:
    """Load and validate a checkpoint; every failure is a one-line CheckpointError naming the file.

    ``mmap=True`` maps the tensors instead of reading them (copy-on-write): cheap when only the
    small entries (config, epoch, history) are needed from a multi-GB file, and a load into a model
    then holds the weights once instead of twice. Files are replaced atomically, never rewritten in
    place, so a mapping stays valid.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(path, "is a folder, expected a checkpoint file (e.g. RUN/model.pt)")
    if not path.is_file():
        raise CheckpointError(path, "checkpoint file not found")
    try:
        blob = None
        if mmap:
            with contextlib.suppress(Exception):  # not a zip checkpoint: read below, with its own error
                blob = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        if blob is None:
            blob = torch.load(io.BytesIO(path.read_bytes()), map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.load on arbitrary bytes raises almost anything
        # (RuntimeError, EOFError, UnpicklingError, BadZipFile, ValueError, OSError, KeyError on text ...)
        raise CheckpointError(path, f"not a readable checkpoint (truncated or corrupt?): {_first_sentence(exc)}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(path, "not a trd checkpoint (no trd header)")
    if blob.get("version") not in SUPPORTED_VERSIONS:
        raise CheckpointError(path, f"checkpoint version {blob.get('version')} is not supported "
                                    f"(this trd reads versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    if blob.get("kind") != kind:
        raise CheckpointError(path, f"is a {blob.get('kind')!r} checkpoint, expected {kind!r}")
    missing = [key for key in REQUIRED_KEYS.get(kind, ()) if key not in blob]
    if missing:
        raise CheckpointError(path, f"incomplete {kind!r} checkpoint: missing {', '.join(missing)}")
    return _upgrade(blob)


def _renamed_keys(entries: dict[str, Any]) -> dict[str, Any]:
    """Rename the branch in keys "<branch>", "<branch>.rest" and "<prefix>.<branch>.rest"."""
    out = {}
    for key, value in entries.items():
        parts = key.split(".")
        for i, part in enumerate(parts[:2]):
            if part in LEGACY_BRANCH_NAMES:
                parts[i] = LEGACY_BRANCH_NAMES[part]
                break
        out[".".join(parts)] = value
    return out


def _upgrade(blob: dict[str, Any]) -> dict[str, Any]:
    """Convert a version-1 blob in place of loading: only the branch name changed ("3d" -> "geo")."""
    if blob["version"] == VERSION:
        return blob
    for key in ("students", "teachers", "scorer", "optimizers", "schedulers"):
        if isinstance(blob.get(key), dict):
            blob[key] = _renamed_keys(blob[key])
    holders = [blob, blob["extra"]] if isinstance(blob.get("extra"), dict) else [blob]
    for holder in holders:  # train_state keeps the history at the top, model.pt under "extra"
        if isinstance(holder.get("history"), list):
            holder["history"] = [{k.replace("loss_3d", "loss_geo"): v for k, v in record.items()}
                                 for record in holder["history"] if isinstance(record, dict)]
    blob["version"] = VERSION
    return blob


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of an exception's message, after its type name (torch's RuntimeErrors
    say enough without it), e.g. "KeyError: 101" for a text file."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    end = first.find(". ")
    first = first[: end + 1] if end > 0 else first
    return first if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {first}"


def load_state_dict_strict(module: torch.nn.Module, state: dict[str, Any], path: str | Path, what: str) -> None:
    """``load_state_dict`` whose shape/key mismatches become a CheckpointError ("from another model")."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(path, f"{what} do not match this model (checkpoint from another model?): {detail[:200]}") from None
