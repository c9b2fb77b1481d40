"""Identity by content: the same bytes under other paths are the same scan; new bytes under the same name are not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trd.data.identity import content_key, files_sha256
from trd.errors import DataError


def test_content_key_follows_the_bytes_not_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rgb, xyz = tmp_path / "latest.png", tmp_path / "latest.tiff"
    rgb.write_bytes(b"colour-1")
    xyz.write_bytes(b"cloud-1")
    key = content_key(rgb, xyz)
    monkeypatch.chdir(tmp_path)
    assert content_key(Path("latest.png"), Path("latest.tiff")) == key  # relative paths
    os.symlink(rgb, tmp_path / "link.png")
    assert content_key(tmp_path / "link.png", xyz) == key  # a link
    xyz.write_bytes(b"cloud-2")  # the scanner rewrote the file under the same name
    assert content_key(rgb, xyz) != key
    # bytes moved from one file to the other are another scan
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"ab")
    b.write_bytes(b"c")
    first = content_key(a, b)
    a.write_bytes(b"a")
    b.write_bytes(b"bc")
    assert content_key(a, b) != first
    assert content_key(a, b, tmp_path / "latest.png") != content_key(a, b)  # a camera file counts


def test_unreadable_files_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="gone.png"):
        content_key(tmp_path / "gone.png", tmp_path / "gone.tiff")
    with pytest.raises(DataError, match="gone.onnx"):
        files_sha256(tmp_path / "gone.onnx")
    (tmp_path / "m.onnx").write_bytes(b"model")
    assert files_sha256(tmp_path / "m.onnx", tmp_path / "m.onnx.data", missing_ok=True) == files_sha256(tmp_path / "m.onnx")


def _sidecar(folder: Path) -> Path:
    (only,) = folder.glob("*.json")
    return only


def test_model_hash_is_remembered_and_never_trusted_across_a_change(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from trd.data import identity

    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "cache" / "preprocess"))
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights-1" * 1000)
    monkeypatch.setattr(identity, "RACY_NS", 0)  # the file is older than its hash at once (see below)
    first = identity.model_sha256(model)
    assert first == files_sha256(model)
    sidecar = _sidecar(identity.identity_cache_dir())
    # A remembered hash is used without reading the file: a forged one comes back while nothing changed.
    saved = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(saved | {"sha256": "f" * 64}))
    assert identity.model_sha256(model) == "f" * 64
    # Rewritten in place with the same size and its mtime set back: its ctime moved, so it is hashed again.
    stat = model.stat()
    with model.open("r+b") as fh:
        fh.write(b"WEIGHTS-2")
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model.stat().st_size == stat.st_size and model.stat().st_mtime_ns == stat.st_mtime_ns
    second = identity.model_sha256(model)
    assert second == files_sha256(model) != first
    # Replaced by a rename (another inode), same size, mtime set back: hashed again.
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"sha256": "e" * 64}))
    other = tmp_path / "other.pt"
    other.write_bytes(b"weights-3" * 1000)
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, model)
    assert identity.model_sha256(model) == files_sha256(model) not in ("e" * 64, second)


def test_a_hash_taken_right_after_a_change_is_checked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file changed less than RACY_NS before its hash is hashed again next time: on a file system
    with coarse timestamps a second change in the same tick would leave every field as it was."""
    from trd.data import identity

    monkeypatch.setenv("TRD_CACHE", str(tmp_path / "cache" / "preprocess"))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"graph")
    identity.model_sha256(model, tmp_path / "model.onnx.data", missing_ok=True)
    sidecar = _sidecar(identity.identity_cache_dir())
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"sha256": "f" * 64}))
    assert identity.model_sha256(model, tmp_path / "model.onnx.data", missing_ok=True) == files_sha256(model)
    # without a writable cache every call hashes, and is right
    monkeypatch.setenv("TRD_CACHE", str(model / "not-a-folder"))
    assert identity.model_sha256(model) == files_sha256(model)
    with pytest.raises(DataError, match="gone.pt"):
        identity.model_sha256(tmp_path / "gone.pt")
