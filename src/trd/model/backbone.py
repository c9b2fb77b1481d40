"""Teachers: frozen ImageNet ResNets cut after layer3 (docs/METHOD.md §3.1), and their channel table.

Student widths are derived from :data:`BACKBONES` so that no dry run is needed to size a layer.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class PublishedWeights:
    """torchvision's ImageNet file (IMAGENET1K_V1) of a backbone: where it is downloaded from, and
    the first hex digits of its sha256, which its name carries (torch.hub's ``check_hash`` rule)."""

    backbone: str
    url: str

    @property
    def file_name(self) -> str:
        return os.path.basename(self.url)

    @property
    def hash_prefix(self) -> str:
        match = torch.hub.HASH_REGEX.search(self.file_name)
        return match.group(1) if match else ""

    @property
    def cached(self) -> Path:
        """Where torchvision looks for the file before it downloads it (`weights_folder`)."""
        return weights_folder() / self.file_name


def published_weights(name: str) -> PublishedWeights:
    """The ImageNet weights file of backbone ``name`` as torchvision publishes it."""
    feature_info(name)  # validates the name
    return PublishedWeights(name, torchvision.models.get_model_weights(name).IMAGENET1K_V1.url)


def weights_folder() -> Path:
    """torchvision's weights cache: ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


#: Beside the cached files: the files imported with their own sha256 (`trd weights import --sha256`),
#: which therefore are not torchvision's published files (written by trd.workflows.weights).
OWN_WEIGHTS_RECORD = "trd-own-weights.json"


def own_weights(folder: Path) -> dict[str, dict[str, str]]:
    """The record of files imported with their own sha256 in ``folder`` ({} when there is none)."""
    try:
        record = json.loads((folder / OWN_WEIGHTS_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _imagenet_state_dict(name: str) -> tuple[Mapping[str, Tensor], Path]:
    """torchvision's IMAGENET1K_V1 weights (cached under torch.hub's dir) and the cache path."""
    published = published_weights(name)
    enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    cached = published.cached
    try:
        state = enum.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot download the ImageNet weights of {name} from {enum.url} ({type(exc).__name__}: {exc}). "
            f"Without internet, download that file on another machine, copy it here and run "
            f"'trd weights import {published.file_name}' (it checks the file and puts it at {cached}; "
            f"'trd weights list' shows every file), or pass it with --backbone-weights FILE (model.weights=FILE "
            f"in a config)"
        ) from exc
    own = own_weights(cached.parent).get(published.file_name)
    if own:
        warnings.warn(f"{cached}: not torchvision's published {name} weights but a file imported with its own "
                      f"sha256 {own.get('sha256', '?')[:16]}... (trd weights import --sha256); the teachers are "
                      "what that file holds", UserWarning, stacklevel=3)
    return state, cached


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
