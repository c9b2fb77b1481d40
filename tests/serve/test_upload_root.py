"""`trd.serve.uploads.UploadRoot`: a server's upload folders, and those a killed server left behind."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from trd.serve.uploads import UploadRoot, sweep


def test_a_server_keeps_its_uploads_in_one_locked_folder_that_it_removes(tmp_path: Path) -> None:
    root = UploadRoot(tmp_path)
    assert root.path.parent == tmp_path and root.path.name.startswith("trd-serve-") and root.removed == 0
    assert oct(root.path.stat().st_mode & 0o777) == "0o700"
    with root.request_folder() as folder:
        (Path(folder) / "rgb.png").write_bytes(b"x")
        assert Path(folder).parent == root.path
        assert sweep(tmp_path) == 0  # a running server's folder is never taken
    assert [p.name for p in root.path.iterdir()] == [".lock"]
    (tmp_path / "aside").mkdir()
    root.path.rename(tmp_path / "aside" / "taken")  # a temp-folder cleaner took it: the next request makes it again
    with root.request_folder() as folder:
        assert Path(folder).parent == root.path and root.path.parent == tmp_path
    root.close()
    assert [p.name for p in tmp_path.iterdir()] == ["aside"]


def test_folders_that_no_running_server_holds_are_removed(tmp_path: Path) -> None:
    killed = tmp_path / "trd-serve-killed"  # a server killed mid-request: its lock file, nobody holding it
    (killed / "tmpabc").mkdir(parents=True)
    (killed / ".lock").touch()
    (killed / "tmpabc" / "scan.tiff").write_bytes(b"x" * 100)
    alive = tmp_path / "trd-serve-alive"  # another server, still running
    alive.mkdir()
    fd = os.open(alive / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    old, young = tmp_path / "trd-serve-oldrequest", tmp_path / "trd-serve-newrequest"  # an older trd's request folders
    for folder in (old, young):
        folder.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (tmp_path / "trd-serve-file").write_text("not a folder")
    (tmp_path / "trd-serve-link").symlink_to(killed)
    (tmp_path / "other").mkdir()
    try:
        root = UploadRoot(tmp_path)
        assert root.removed == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["trd-serve-alive", "trd-serve-newrequest", "trd-serve-file", "trd-serve-link", "other", root.path.name])
        root.close()
    finally:
        os.close(fd)
