"""Teachers: channel table, freezing, and the three ways of getting weights."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from trd.errors import CheckpointError, ConfigError
from trd.model.backbone import BACKBONES, build_teacher, feature_info


def _random_teacher(name: str = "resnet18"):
    with pytest.warns(UserWarning, match="meaningless"):
        return build_teacher(name, "none")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_feature_info_matches_the_real_network(name: str) -> None:
    info = feature_info(name)
    with torch.device("meta"):
        feats = _random_teacher(name)(torch.empty(1, 3, 256, 256))
    assert [f.shape[1] for f in feats] == list(info.channels)
    assert [256 // f.shape[-1] for f in feats] == list(info.reductions)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="wide_resnet50_2"):
        feature_info("vgg16")
    with pytest.raises(ConfigError, match="resnet18"):
        build_teacher("resnet1000", "none")


def test_teacher_is_frozen_truncated_and_stays_in_eval() -> None:
    teacher = _random_teacher()
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not hasattr(teacher, "layer4") and not hasattr(teacher, "fc")
    teacher.train()
    assert not any(m.training for m in teacher.modules())


def test_weights_file_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for m in net.modules():  # non-trivial running statistics, so that eval-mode BN matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)  # full torchvision dict, layer4 and fc included
    teacher = build_teacher("resnet18", str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        expected = [y := net.layer1(y), y := net.layer2(y), net.layer3(y)]
        for got, want in zip(teacher(x), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    truncated = tmp_path / "teacher.pth"
    torch.save(teacher.state_dict(), truncated)  # the teacher's own dict loads too
    torch.testing.assert_close(build_teacher("resnet18", str(truncated)).state_dict(), teacher.state_dict())


def test_wrong_weights_file_names_file_and_keys(tmp_path) -> None:
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"r18\.pth.*missing keys layer1\.2"):
        build_teacher("resnet34", str(path))
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"shape mismatches conv1\.weight \(8, 3, 7, 7\)"):
        build_teacher("resnet18", str(path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_teacher("resnet18", str(path))
    with pytest.raises(ConfigError, match="no such file"):
        build_teacher("resnet18", str(tmp_path / "absent.pth"))


def test_imagenet_download_failure_explains_offline_use(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ConfigError) as info:
        build_teacher("wide_resnet50_2", "imagenet")
    message = str(info.value)
    assert "--backbone-weights FILE" in message and "model.weights=FILE" in message
    assert f"{torch.hub.get_dir()}/checkpoints/wide_resnet50_2-95faca4d.pth" in message


def test_imagenet_weights_come_from_torchvision_v1(monkeypatch) -> None:
    state = torchvision.models.resnet18().state_dict()
    urls = []

    def fake_download(url, *args, **kwargs):
        urls.append(url)
        return state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    teacher = build_teacher("resnet18", "imagenet")
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    torch.testing.assert_close(teacher.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
