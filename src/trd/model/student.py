"""Trainable student of one branch: Crossmodal Filter, fused OCBE, Amplifier, decoder (docs/METHOD.md §3.2-3.7).

Every width comes from the teacher's channel table ``(c1, c2, c3)``: Wide-ResNet-50-2's
(256, 512, 1024) gives exactly the shapes of docs/METHOD.md §3; ResNet-18's (64, 128, 256) a small model.
Inputs must have a side divisible by 32 (the bottleneck is at reduction 32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

Channels = tuple[int, int, int]


def _init_weights(module: nn.Module) -> None:
    """Reference init: Conv2d kaiming-normal (fan_out, relu), BN 1/0; ConvTranspose2d keeps the default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int, padding: int = 0) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    deconv = nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False)
    return nn.Sequential(deconv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CrossmodalFilter(nn.Module):
    """§3.2 "Bottleneck Projection": per level, squeeze to reduction 32 with 2*c3 channels and back.

    Level l walks the channel ladder c_l -> ... -> c3 -> 2*c3 with conv(2,2) steps, then back down
    with deconv(2,2) steps; every step is followed by BN + ReLU.
    """

    def __init__(self, channels: Channels) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for level in range(3):
            ladder = [*channels[level:], 2 * channels[-1]]
            down = [_conv_bn_relu(a, b, 2, 2) for a, b in zip(ladder, ladder[1:])]
            up = [_deconv_bn_relu(b, a) for a, b in reversed(list(zip(ladder, ladder[1:])))]
            self.levels.append(nn.Sequential(*down, *up))
        _init_weights(self)

    def forward(self, assist: Sequence[Tensor]) -> list[Tensor]:
        return [level(x) for level, x in zip(self.levels, assist)]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> spatial conv -> 1x1, each followed by BatchNorm (+ ReLU), plus a shortcut.

    ``resample``: "none" (3x3 conv, identity shortcut unless the channels change, then 1x1 + norm),
    "down" (stride-2 3x3 conv, 1x1 stride-2 shortcut + norm; the encoder-side OCBE blocks) or
    "up" (2x2 stride-2 ConvTranspose instead of the 3x3, and a deconv + norm shortcut; the decoder
    blocks of docs/METHOD.md §3.5). Attribute names follow torchvision's bottleneck, so state-dict
    keys read as ``conv1 bn1 conv2 bn2 conv3 bn3 shortcut``.
    """

    def __init__(self, cin: int, width: int, cout: int, resample: str = "none") -> None:
        super().__init__()
        if resample not in ("none", "down", "up"):
            raise ValueError(f"resample must be 'none', 'down' or 'up', got {resample!r}")
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if resample == "up":
            self.conv2: nn.Module = nn.ConvTranspose2d(width, width, 2, stride=2, bias=False)
        else:
            self.conv2 = nn.Conv2d(width, width, 3, stride=2 if resample == "down" else 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if resample == "up":
            self.shortcut = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm2d(cout))
        elif resample == "down" or cin != cout:
            stride = 2 if resample == "down" else 1
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class FusedBottleneck(nn.Module):
    """§3.3 fused one-class bottleneck embedding: 3 levels -> one 2*c3 map at reduction 32.

    Level inputs are concat(main, filtered assist) (``in_multiplier=2``) or main alone (``1``).
    Paths: l1 = two stride-2 3x3 convs (m*c1 -> m*c2 -> c3), l2 = one (m*c2 -> c3), l3 = a stride-1
    3x3 (m*c3 -> c3); their concatenation (3*c3) goes through ``blocks`` bottlenecks of width c3 and
    output 2*c3, the first one with stride 2.
    """

    def __init__(self, channels: Channels, in_multiplier: int = 2, blocks: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = (in_multiplier * c for c in channels)
        width = channels[2]
        self.level1 = nn.Sequential(_conv_bn_relu(c1, c2, 3, 2, 1), _conv_bn_relu(c2, width, 3, 2, 1))
        self.level2 = _conv_bn_relu(c2, width, 3, 2, 1)
        self.level3 = _conv_bn_relu(c3, width, 3, 1, 1)
        layers = [Bottleneck(3 * width, width, 2 * width, resample="down")]
        layers += [Bottleneck(2 * width, width, 2 * width) for _ in range(blocks - 1)]
        self.blocks = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, main: Sequence[Tensor], filtered: Sequence[Tensor] | None = None) -> Tensor:
        x = list(main) if filtered is None else [torch.cat(pair, dim=1) for pair in zip(main, filtered)]
        return self.blocks(torch.cat([self.level1(x[0]), self.level2(x[1]), self.level3(x[2])], dim=1))


class Amplifier(nn.Module):
    """§3.4 "Inverted Bottleneck Projection": per level C -> C (3x3) -> 2C (1x1) -> C (1x1), + BN + ReLU."""

    def __init__(self, channels: Channels) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Sequential(_conv_bn_relu(c, c, 3, 1, 1), _conv_bn_relu(c, 2 * c, 1, 1), _conv_bn_relu(2 * c, c, 1, 1))
            for c in channels
        )
        _init_weights(self)

    def forward(self, assist: Sequence[Tensor]) -> list[Tensor]:
        return [level(x) for level, x in zip(self.levels, assist)]


def _decoder_stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    width = cout // 2
    layers = [Bottleneck(cin, width, cout, resample="up")]
    layers += [Bottleneck(cout, width, cout) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """§3.5 reverse Wide-ResNet decoder with the §3.6 sequential softmax fusion of the amplifier outputs.

    Stages up1/up2/up3 map 2*c3 -> c3 -> c2 -> c1 (widths c_l/2), each doubling the resolution.
    After stage k the output is mixed with the amplifier output of the same level using
    softmax(w) of a learnable 2-vector (w_a, w_b, w_c, initialised to (1, 1)); the mix feeds the
    next stage. ``fuse_stopgrad`` reproduces the reference's pre-2025-05 detached variant (same
    forward values, different gradients). ``fuse=False`` (no amplifier): S is D and no w exists.
    """

    def __init__(
        self,
        channels: Channels,
        blocks: Sequence[int] = (3, 4, 6),
        fuse_stopgrad: bool = False,
        fuse: bool = True,
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.up1 = _decoder_stage(2 * c3, c3, blocks[0])
        self.up2 = _decoder_stage(c3, c2, blocks[1])
        self.up3 = _decoder_stage(c2, c1, blocks[2])
        self.fuse = fuse
        self.fuse_stopgrad = fuse_stopgrad
        if fuse:
            self.w_a = nn.Parameter(torch.ones(2))
            self.w_b = nn.Parameter(torch.ones(2))
            self.w_c = nn.Parameter(torch.ones(2))
        _init_weights(self)

    def forward(self, z: Tensor, amplified: Sequence[Tensor] | None = None) -> tuple[list[Tensor] | None, list[Tensor]]:
        """Return (S, D), fused and raw outputs, each ordered finest level first like the teacher's.

        Without fusion (no amplifier) there is no S: the first element is None.
        """
        stages = (self.up1, self.up2, self.up3)
        if not self.fuse:
            raw = []
            for stage in stages:
                z = stage(z)
                raw.append(z)
            raw.reverse()
            return None, raw
        if amplified is None:
            raise ValueError("this decoder fuses amplifier outputs: pass `amplified`")
        raw, fused = [], []
        x = z
        for stage, w, amp in zip(stages, (self.w_a, self.w_b, self.w_c), reversed(amplified)):
            y = stage(x)
            mix = torch.softmax(w, dim=0)  # (share of the decoder output, share of the amplifier output)
            if self.fuse_stopgrad:
                # Returned mix trains only w; the next stage's input does not train w.
                fused.append(mix[0] * y.detach() + mix[1] * amp.detach())
                mix = mix.detach()
                x = mix[0] * y + mix[1] * amp
            else:
                x = mix[0] * y + mix[1] * amp
                fused.append(x)
            raw.append(y)
        return fused[::-1], raw[::-1]


class StudentOutput(NamedTuple):
    """What one student produces; lists are ordered like the teacher levels (finest first).

    Absent modules give None, so that no term is counted twice by the loss and the anomaly map
    knows which output to read (`map_source`).
    """

    filtered: list[Tensor] | None  # F: Filter(assist), None without a Filter
    amplified: list[Tensor] | None  # A: Amplifier(assist), None without an Amplifier
    decoded: list[Tensor]  # D: raw decoder outputs
    fused: list[Tensor] | None  # S: decoder outputs fused with A, None without an Amplifier

    @property
    def map_source(self) -> list[Tensor]:
        """The outputs compared with the teacher at test time: S, or D when there is no fusion."""
        return self.decoded if self.fused is None else self.fused


class Student(nn.Module):
    """§3.7 one branch: F = Filter(assist), A = Amplifier(assist), z = OCBE(main, F), (S, D) = Decoder(z, A)."""

    def __init__(
        self,
        channels: Channels,
        use_filter: bool = True,
        use_amplifier: bool = True,
        fuse_stopgrad: bool = False,
        decoder_blocks: Sequence[int] = (3, 4, 6),
        bottleneck_blocks: int = 3,
    ) -> None:
        super().__init__()
        self.filter = CrossmodalFilter(channels) if use_filter else None
        self.bottleneck = FusedBottleneck(channels, 2 if use_filter else 1, bottleneck_blocks)
        self.amplifier = Amplifier(channels) if use_amplifier else None
        self.decoder = Decoder(channels, decoder_blocks, fuse_stopgrad, fuse=use_amplifier)

    @property
    def needs_assist(self) -> bool:
        """Whether forward needs the assist modality's teacher features."""
        return self.filter is not None or self.amplifier is not None

    def forward(self, main: Sequence[Tensor], assist: Sequence[Tensor] | None = None) -> StudentOutput:
        """Teacher features are detached here: no gradient ever reaches a teacher."""
        if self.needs_assist and assist is None:
            raise ValueError("this student has a Filter/Amplifier: pass the assist teacher features")
        main = [t.detach() for t in main]
        assist = [t.detach() for t in assist] if assist is not None and self.needs_assist else None
        filtered = self.filter(assist) if self.filter is not None else None
        amplified = self.amplifier(assist) if self.amplifier is not None else None
        fused, decoded = self.decoder(self.bottleneck(main, filtered), amplified)
        return StudentOutput(filtered, amplified, decoded, fused)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per module (BN affine included, running buffers not), and the total."""
        parts = {
            "filter": self.filter,
            "bottleneck": self.bottleneck,
            "amplifier": self.amplifier,
            "decoder": self.decoder,
        }
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}
        counts["total"] = sum(counts.values())
        return counts
