"""Scoring in N plain processes (a scheduler's job array), and merging their output folders.

``trd predict --shard i/N`` scores the i-th of N parts of the samples (1 <= i <= N). A sample's part
is fixed by a hash of its RGB file's path inside ``--input``, not by its place in the listing: every
task of the array computes the same split without talking to the others, and files that arrive
while the array runs do not move any other file to another part. Each task writes its own output
folder (a folder has one writer), e.g. ``--out preds/part-3``.

``trd predict-merge PART... --out ALL`` (`merge_predictions`) checks that every part was scored by
the same model (``predict.json``'s sha256; a model.pt and its ONNX export count as one model), then
copies each part's complete records and their pictures into ``ALL``: a scan (its content) that is in
two parts is written once, and a merge that is stopped continues when run again, like predict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.samples import Sample
from ..errors import ConfigError, DataError
from ..runfolder import folder_lock
from ..runtime.records import record_identity
from .predict import MANIFEST, PREDICTIONS, Ledger, claim, complete_record, shown_path

Log = Callable[[str], None]


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int


def parse_shard(text: str) -> Shard:
    """``"i/N"`` -> Shard; ConfigError unless 1 <= i <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 3/8 for the third of eight parts")
    return Shard(int(match[1]), int(match[2]))


def shard_key(sample: Sample, input_dir: Path | None) -> str:
    """What decides a sample's part: its RGB file as its record names it (`shown_path`: the path
    inside ``input_dir``, else the file name)."""
    return shown_path(sample.rgb, input_dir)


def shard_of(samples: Sequence[Sample], shard: Shard, input_dir: Path | None) -> list[Sample]:
    """The samples of part ``shard``: those whose `shard_key` hashes (sha256) to it."""
    def part(sample: Sample) -> int:
        return int(hashlib.sha256(shard_key(sample, input_dir).encode()).hexdigest()[:16], 16) % shard.count

    return [s for s in samples if part(s) == shard.index - 1]


def _owner(part: Path) -> dict[str, Any]:
    manifest = part / MANIFEST
    if not manifest.is_file():
        raise DataError(part, f"no {MANIFEST}: not an output folder of trd predict")
    try:
        owner = json.loads(manifest.read_text())
    except (ValueError, OSError) as exc:
        raise DataError(manifest, f"unreadable ({exc})") from None
    if not isinstance(owner, dict) or not isinstance(owner.get("sha256"), str):
        raise DataError(manifest, "does not name the model's sha256")
    return owner


def merge_predictions(parts: Sequence[str | Path], out: str | Path, *, overwrite: bool = False,
                      log: Log = print) -> dict[str, Any]:
    """Merge the output folders ``parts`` of one model into ``out`` (see the module's text).

    Returns ``{"merged", "duplicates", "parts", "total", "predictions"}``: records copied by this
    run, records of scans already in ``out``, and the lines now in ``out``.
    """
    parts, out = [Path(p) for p in parts], Path(out)
    if not parts:
        raise ConfigError("trd predict-merge: give the output folders of the parts to merge")
    for part in parts:
        if part.resolve() == out.resolve():
            raise ConfigError(f"--out {out} is one of the parts; merge into another folder")
    owners = {part: _owner(part) for part in parts}
    models = {o.get("source_sha256") or o["sha256"] for o in owners.values()}
    if len(models) > 1:
        listed = ", ".join(f"{p} ({o['sha256'][:12]}, {o.get('model', 'unknown model')})" for p, o in owners.items())
        raise DataError(parts[0], f"the parts were scored by {len(models)} different models: {listed}; "
                                  "merge only parts of one model")
    first = owners[parts[0]]
    merged = duplicates = 0
    with contextlib.ExitStack() as held:
        for part in parts:  # a part that is still being written is refused, before anything is written
            held.enter_context(folder_lock(part, "trd predict-merge"))
        held.enter_context(folder_lock(out, "trd predict-merge"))
        claim(out, {k: first.get(k) for k in ("model", "sha256", "source_sha256")}, overwrite, log)
        ledger = Ledger(out, log)
        for part in parts:
            lines = (part / PREDICTIONS).read_bytes().split(b"\n") if (part / PREDICTIONS).is_file() else []
            for line in lines:
                record = complete_record(line, part)
                if record is None:
                    continue
                if record_identity(record) in ledger.done:
                    duplicates += 1
                else:
                    ledger.copy(record, part)
                    merged += 1
    log(f"predict-merge: {merged} records merged from {len(parts)} parts, {duplicates} already there")
    return {"merged": merged, "duplicates": duplicates, "parts": len(parts),
            "total": len(ledger.done), "predictions": str(ledger.path)}
