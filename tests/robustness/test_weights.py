"""ImageNet teachers on a PC without internet (issue 19 item 1): ``trd weights import | list | where``.

This machine cannot download torchvision's weights, and a file made here cannot have the published
sha256, so a resnet18 state dict saved by the test stands in for the download: under the published
name it is refused (the hash check), with its own sha256 given explicitly it is imported, and then a
real teacher is built from it with ``weights="imagenet"``: torchvision finds it in its cache
(TORCH_HOME is a temporary folder) and downloads nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision

from trd.model.backbone import OWN_WEIGHTS_RECORD, build_teacher, published_weights

PUBLISHED = "resnet18-f37072fd.pth"  # torchvision's name: the sha256 of the real file starts f37072fd


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An empty torchvision cache (TORCH_HOME) and a resnet18 weights file made here."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    made = tmp_path / "usb" / PUBLISHED
    made.parent.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), made)
    sha = hashlib.sha256(made.read_bytes()).hexdigest()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    return SimpleNamespace(made=made, sha=sha, cache=cache, target=cache / PUBLISHED)


def test_a_file_that_is_not_the_published_one_is_refused(offline: SimpleNamespace, tools: SimpleNamespace,
                                                         messages) -> None:
    assert published_weights("resnet18").hash_prefix == "f37072fd"
    result = tools.run_cli_inprocess("weights", "import", str(offline.made))
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and line.startswith(f"error: {offline.made}: is not torchvision's published resnet18")
    assert "starts with f37072fd" in line and offline.sha[:16] in line and "--sha256" in line
    assert not offline.target.exists() and not list(offline.cache.glob(".*.tmp"))  # nothing written
    messages.record("input", "trd weights import of a file that is not the published one", line)

    wrong = tools.run_cli_inprocess("weights", "import", str(offline.made), "--sha256", "0" * 64)
    (line,) = tools.visible_lines(wrong.stderr)
    assert wrong.code == 2 and f"sha256 {offline.sha} does not match the given {'0' * 64}" in line
    messages.record("input", "trd weights import --sha256 that does not match", line)
    assert not offline.target.exists()


def test_own_weights_with_their_sha256_are_imported_and_loaded_as_imagenet(offline: SimpleNamespace,
                                                                           tools: SimpleNamespace) -> None:
    result = tools.run_cli_inprocess("weights", "import", str(offline.made), "--sha256", offline.sha[:12].upper())
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == str(offline.target)
    assert offline.target.read_bytes() == offline.made.read_bytes()
    assert json.loads((offline.cache / OWN_WEIGHTS_RECORD).read_text())[PUBLISHED]["sha256"] == offline.sha

    listing = " ".join(tools.run_cli_inprocess("weights", "list").stdout.split())
    assert f"resnet18 {PUBLISHED} installed: your own file" in listing
    assert "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth" in listing  # what to copy
    assert tools.run_cli_inprocess("weights", "where").stdout.strip() == str(offline.cache)

    with pytest.warns(UserWarning, match="not torchvision's published resnet18 weights"):
        teacher = build_teacher("resnet18", "imagenet")  # no network here: found in the cache
    expected = torch.load(offline.made, weights_only=True)
    assert torch.equal(teacher.conv1.weight, expected["conv1.weight"])
    assert torch.equal(teacher.layer3[1].bn2.running_var, expected["layer3.1.bn2.running_var"])


def test_a_damaged_cached_file_is_listed_as_damaged(offline: SimpleNamespace, tools: SimpleNamespace) -> None:
    tools.run_cli_inprocess("weights", "import", str(offline.made), "--sha256", offline.sha)
    offline.target.write_bytes(offline.target.read_bytes()[:-10])  # cut short after the import
    listing = tools.run_cli_inprocess("weights", "list").stdout
    assert "installed but DAMAGED" in listing and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in listing


def test_a_file_of_another_backbone_is_refused_before_anything_is_written(offline: SimpleNamespace,
                                                                         tools: SimpleNamespace) -> None:
    result = tools.run_cli_inprocess("weights", "import", str(offline.made), "--backbone", "resnet50",
                                     "--sha256", offline.sha)
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and "not weights of this backbone" in line, line
    assert not offline.cache.exists() or not any(offline.cache.iterdir())
