"""Teachers: frozen ImageNet ResNets cut after layer3 (docs/METHOD.md §3.1), and their channel table.

Student widths are derived from :data:`BACKBONES` so that no dry run is needed to size a layer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and spatial reductions (input size / feature size) of the three teacher levels."""

    channels: tuple[int, int, int]
    reductions: tuple[int, int, int] = (4, 8, 16)


#: Outputs of layer1, layer2, layer3 of each supported torchvision ResNet.
BACKBONES: dict[str, FeatureInfo] = {
    "wide_resnet50_2": FeatureInfo((256, 512, 1024)),
    "resnet50": FeatureInfo((256, 512, 1024)),
    "resnet18": FeatureInfo((64, 128, 256)),
    "resnet34": FeatureInfo((64, 128, 256)),
}

#: Prefixes of torchvision ResNet weights that the truncated teacher does not hold.
_DROPPED_PREFIXES = ("layer4.", "fc.")


def feature_info(name: str) -> FeatureInfo:
    """Channel table of backbone ``name``; :class:`ConfigError` for an unknown one."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}") from None


class Teacher(nn.Module):
    """conv1..layer3 of a torchvision ResNet, frozen and permanently in eval mode.

    DEPARTURE (docs/METHOD_NOTES.md §5; no effect on outputs, docs/METHOD.md §10.9): the reference keeps layer4/fc loaded but
    unused and leaves ``requires_grad=True`` on the teacher; here layer4/fc are dropped (saves
    ~44 M parameters per WRN50-2 teacher) and every parameter is frozen.
    """

    def __init__(self, net: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Ignore ``mode``: the teacher's BN layers always use their ImageNet running statistics."""
        return super().train(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return [f1, f2, f3], the post-ReLU outputs of layer1, layer2 and layer3."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def build_teacher(name: str, weights: str) -> Teacher:
    """Build a frozen teacher; ``weights`` is "imagenet" (IMAGENET1K_V1), "none" or a state-dict file."""
    feature_info(name)  # validates the name
    state, source = None, ""
    if weights == "imagenet":
        state, source = _imagenet_state_dict(name)
    elif weights != "none":
        state, source = _read_state_dict(weights), weights
    teacher = Teacher(torchvision.models.get_model(name, weights=None))
    if state is None:
        warnings.warn(
            f"teacher {name} is randomly initialised (weights='none'): anomaly scores are meaningless "
            "without pretrained teachers; use this only for tests and smoke runs",
            UserWarning,
            stacklevel=2,
        )
    else:
        _load_teacher_state(teacher, state, source)
    return teacher


def _read_state_dict(file: str) -> Mapping[str, Tensor]:
    path = Path(file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights: no such file {str(path)!r} (expected 'imagenet', 'none' or a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(path, f"cannot read a state dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(path, f"expected a state dict, found {type(state).__name__}")
    return state


def _imagenet_state_dict(name: str) -> tuple[Mapping[str, Tensor], Path]:
    """torchvision's IMAGENET1K_V1 weights (cached under torch.hub's dir) and the cache path."""
    enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    try:
        return enum.get_state_dict(progress=True, check_hash=True), cached
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot download the ImageNet weights of {name} from {enum.url} ({type(exc).__name__}: {exc}). "
            f"Without internet, download that file elsewhere and either pass it with "
            f"`--backbone-weights FILE` / `model.weights=FILE`, or copy it to {cached} (torchvision's cache)"
        ) from exc


def _load_teacher_state(teacher: Teacher, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load a (full or truncated) torchvision ResNet state dict; layer4/fc entries are ignored."""
    own = teacher.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(_DROPPED_PREFIXES)}
    problems = []
    missing = [k for k in own if k not in kept and not k.endswith("num_batches_tracked")]
    if missing:
        problems.append(f"missing keys {_first(missing)}")
    unexpected = [k for k in kept if k not in own]
    if unexpected:
        problems.append(f"unexpected keys {_first(unexpected)}")
    mismatched = [
        f"{k} {tuple(getattr(kept[k], 'shape', ()))} != {tuple(own[k].shape)}"
        for k in own
        if k in kept and (not isinstance(kept[k], Tensor) or kept[k].shape != own[k].shape)
    ]
    if mismatched:
        problems.append(f"shape mismatches {_first(mismatched)}")
    if problems:
        raise CheckpointError(source, "not weights of this backbone: " + "; ".join(problems))
    teacher.load_state_dict(kept, strict=False)


def _first(items: list[str], n: int = 4) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
