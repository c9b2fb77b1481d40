"""ImageNet teacher weights on a PC without internet (``trd weights list | import | where``).

On first use torchvision downloads a backbone's ImageNet weights into its cache,
``$TORCH_HOME/hub/checkpoints/`` (`trd.model.backbone.weights_folder`), and checks the download's
sha256 against the hex digits in the file's name (``resnet18-f37072fd.pth``: the sha256 starts with
f37072fd; torch.hub's ``check_hash``). A file already in the cache is used without a download. So an
offline PC gets the file copied from a machine with internet, and `import_weights` puts it where
torchvision looks after the same check, plus a load as that backbone's weights; then
``--backbone-weights imagenet`` (the default) uses it.

A file that is not the published one (your own or fine-tuned weights under the published name) is
imported only when its sha256 is given explicitly (``--sha256``), and is recorded as such beside the
cache (`trd.model.backbone.OWN_WEIGHTS_RECORD`): ``trd weights list`` and every fit that loads it say
so.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_save, atomic_write_text
from ..data.identity import files_sha256
from ..errors import ConfigError, DataError
from ..model.backbone import (BACKBONES, OWN_WEIGHTS_RECORD, PublishedWeights, build_teacher, own_weights,
                              published_weights, weights_folder)

Log = Callable[[str], None]
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class WeightsStatus:
    """One backbone's ImageNet file in the cache: ``state`` is "missing", "ok" (its sha256 starts
    with the published digits), "own" (imported with its own sha256, which it still has) or
    "damaged" (neither: a broken copy or a file changed after import)."""

    published: PublishedWeights
    state: str
    sha256: str = ""


def list_weights() -> list[WeightsStatus]:
    """The ImageNet file of every supported backbone and whether the cache holds it, checked (each
    installed file is read once to hash it: about a second for wide_resnet50_2's 263 MB)."""
    out = []
    own = own_weights(weights_folder())
    for name in BACKBONES:
        published = published_weights(name)
        if not published.cached.is_file():
            out.append(WeightsStatus(published, "missing"))
            continue
        sha = files_sha256(published.cached)
        if sha.startswith(published.hash_prefix):
            state = "ok"
        elif own.get(published.file_name, {}).get("sha256") == sha:
            state = "own"
        else:
            state = "damaged"
        out.append(WeightsStatus(published, state, sha))
    return out


_STATE_WORDS = {
    "missing": "not installed",
    "ok": "installed, sha256 matches the published digits",
    "own": "installed: your own file (imported with --sha256), not the published one",
    "damaged": "installed but DAMAGED: sha256 matches neither the published digits nor an import; import it again",
}


def render_weights(rows: list[WeightsStatus]) -> str:
    """What ``trd weights list`` prints: the cache folder, each backbone's file and state, and for the
    missing ones the URL to download on a machine with internet."""
    out = [f"ImageNet teacher weights in torchvision's cache {weights_folder()} (TORCH_HOME moves it):"]
    width = max(len(r.published.file_name) for r in rows)
    out += [f"  {r.published.backbone:16} {r.published.file_name:{width}}  {_STATE_WORDS[r.state]}" for r in rows]
    missing = [r for r in rows if r.state in ("missing", "damaged")]
    if missing:
        out += ["", "Without internet here: download on another machine, copy the file to this PC and run "
                    "'trd weights import FILE' (it checks the file's sha256 and puts it in the cache):"]
        out += [f"  {r.published.backbone:16} {r.published.url}" for r in missing]
    return "\n".join(out)


def _backbone_of(file: Path, backbone: str | None) -> PublishedWeights:
    if backbone is not None:
        return published_weights(backbone)
    for name in BACKBONES:
        published = published_weights(name)
        if file.name == published.file_name:
            return published
    names = ", ".join(f"{n} ({published_weights(n).file_name})" for n in BACKBONES)
    raise ConfigError(f"{file}: cannot tell which backbone's weights this file holds from its name; give it with "
                      f"--backbone, one of {names}")


def import_weights(file: str | Path, *, backbone: str | None = None, sha256: str | None = None,
                   log: Log = print) -> Path:
    """Check ``file`` and copy it (atomically) to where torchvision looks for ``backbone``'s
    ImageNet weights; returns that path.

    Args:
        file: a weights file, e.g. ``resnet18-f37072fd.pth`` copied from a machine with internet.
        backbone: which backbone it is for (default: from the file's published name).
        sha256: the file's expected sha256 (hex, at least its first 8 digits) for a file that is not
            the published one; without it the file must match the published digits.
        log: where the result line goes.

    Raises DataError (nothing is written) when the file is missing, its sha256 does not match, or it
    does not load as the backbone's weights; OutputError when the cache cannot be written.

    Example:
        >>> from trd.workflows.weights import import_weights
        >>> import_weights("/media/usb/wide_resnet50_2-95faca4d.pth")  # doctest: +SKIP
        PosixPath('/root/.cache/torch/hub/checkpoints/wide_resnet50_2-95faca4d.pth')
    """
    file = Path(file).expanduser()
    if not file.is_file():
        raise DataError(file, "weights file not found" if not file.exists() else "is a folder, expected a weights file")
    published = _backbone_of(file, backbone)
    given = None if sha256 is None else sha256.strip().lower()
    if given is not None and not _HEX.match(given):
        raise ConfigError(f"--sha256 {sha256!r}: expected 8 to 64 hex digits (the file's sha256, e.g. from "
                          "'sha256sum FILE')")
    sha = files_sha256(file)
    if given is not None and not sha.startswith(given):
        raise DataError(file, f"sha256 {sha} does not match the given {given}: a damaged copy? nothing was imported")
    if given is None and not sha.startswith(published.hash_prefix):
        raise DataError(file, f"is not torchvision's published {published.backbone} weights file: that file's sha256 "
                              f"starts with {published.hash_prefix}, this one's is {sha[:16]}... (a damaged or "
                              f"incomplete copy? download {published.url} again); for your own weights give their "
                              "sha256 with --sha256")
    build_teacher(published.backbone, str(file))  # loads it as that backbone's weights, or says why not
    target = published.cached
    if target.is_file() and files_sha256(target) == sha:
        log(f"{target}: already installed (same sha256)")
    else:
        with file.open("rb") as src:
            atomic_save(target, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
        log(f"{target}: installed ({published.backbone}, sha256 {sha[:16]}..., "
            f"{'the published file' if sha.startswith(published.hash_prefix) else 'your own weights'})")
    _record_own(target.parent, published.file_name, None if sha.startswith(published.hash_prefix) else sha, file)
    return target


def _record_own(folder: Path, name: str, sha: str | None, source: Path) -> None:
    """Add (``sha`` given) or drop ``name`` in the record of files imported with their own sha256."""
    record = own_weights(folder)
    if sha is None and name not in record:
        return
    if sha is None:
        del record[name]
    else:
        record[name] = {"sha256": sha, "source": str(source.resolve()), "imported": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(folder / OWN_WEIGHTS_RECORD, json.dumps(record, indent=2) + "\n")
