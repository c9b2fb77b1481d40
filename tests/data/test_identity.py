"""Identity by content: the same bytes under other paths are the same scan; new bytes under the same name are not."""

from __future__ import annotations

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
