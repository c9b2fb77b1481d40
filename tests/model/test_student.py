"""Student modules: method.md §3 shapes and §8 parameter counts for WRN50-2, init, fusion gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trd.model.backbone import feature_info
from trd.model.student import Decoder, Student
from trd.training.loss import cosine_distill

WRN = feature_info("wide_resnet50_2").channels
R18 = feature_info("resnet18").channels
TINY = (8, 16, 32)  # any doubling ladder works; keeps the gradient tests fast


def _levels(channels, side: int, batch: int = 2, device: str = "cpu") -> list[torch.Tensor]:
    """Random non-negative teacher-like features for a ``side`` x ``side`` input."""
    return [torch.rand(batch, c, side // r, side // r, device=device) for c, r in zip(channels, (4, 8, 16))]


def test_wrn_parameter_counts_match_method_section_8() -> None:
    with torch.device("meta"):
        counts = Student(WRN).parameter_counts()
    assert counts == {
        "filter": 59_794_944,
        "bottleneck": 90_738_688,
        "amplifier": 17_905_664,
        "decoder": 24_917_510,
        "total": 193_356_806,
    }
    rounded = {k: round(v / 1e6, 1) for k, v in counts.items()}
    assert rounded == {"filter": 59.8, "bottleneck": 90.7, "amplifier": 17.9, "decoder": 24.9, "total": 193.4}


def test_wrn_shapes_at_256_px_match_method_section_3() -> None:
    with torch.device("meta"):  # shapes only: no arithmetic at full size
        student = Student(WRN)
        main, assist = _levels(WRN, 256, device="meta"), _levels(WRN, 256, device="meta")
        out = student(main, assist)
        z = student.bottleneck(main, out.filtered)
        squeezed = student.filter.levels[0][:3](assist[0])
    expected = [(2, 256, 64, 64), (2, 512, 32, 32), (2, 1024, 16, 16)]
    for name in ("filtered", "amplified", "decoded", "fused"):
        assert [tuple(t.shape) for t in getattr(out, name)] == expected, name
    assert tuple(z.shape) == (2, 2048, 8, 8)
    assert tuple(squeezed.shape) == (2, 2048, 8, 8)


def test_small_student_forward_is_finite_and_non_negative() -> None:
    torch.manual_seed(0)
    out = Student(R18, decoder_blocks=(1, 1, 1), bottleneck_blocks=1)(_levels(R18, 32), _levels(R18, 32))
    for t in [*out.filtered, *out.amplified, *out.decoded, *out.fused]:
        assert torch.isfinite(t).all() and (t >= 0).all()


def test_init_follows_the_reference() -> None:
    torch.manual_seed(0)
    student = Student(R18)
    for m in student.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            assert abs(m.weight.std().item() / math.sqrt(2 / fan_out) - 1) < 0.15
        elif isinstance(m, nn.ConvTranspose2d):  # PyTorch default: uniform within 1/sqrt(fan_in)
            bound = 1 / math.sqrt(m.weight.shape[1] * m.kernel_size[0] * m.kernel_size[1])
            assert m.weight.abs().max().item() <= bound
        elif isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    for w in (student.decoder.w_a, student.decoder.w_b, student.decoder.w_c):
        assert w.tolist() == [1.0, 1.0]


def test_variants_without_filter_or_amplifier() -> None:
    torch.manual_seed(0)
    plain = Student(TINY, use_filter=False, use_amplifier=False, decoder_blocks=(1, 1, 1), bottleneck_blocks=1)
    assert not plain.needs_assist and not hasattr(plain.decoder, "w_a")
    assert plain.bottleneck.level1[0][0].in_channels == TINY[0]
    out = plain(_levels(TINY, 32))
    assert out.filtered is None and out.amplified is None and out.fused is None
    assert out.map_source is out.decoded  # no fusion: the map compares the raw decoder outputs
    no_filter = Student(TINY, use_filter=False, decoder_blocks=(1, 1, 1), bottleneck_blocks=1)
    with pytest.raises(ValueError, match="assist"):
        no_filter(_levels(TINY, 32))
    out = no_filter(_levels(TINY, 32), _levels(TINY, 32))
    assert out.filtered is None and out.amplified is not None and out.map_source is out.fused is not None


def test_teacher_features_are_detached() -> None:
    main, assist = _levels(TINY, 32), _levels(TINY, 32)
    for t in main + assist:
        t.requires_grad_(True)
    out = Student(TINY, decoder_blocks=(1, 1, 1), bottleneck_blocks=1)(main, assist)
    cosine_distill(out.fused, [t.detach() for t in main]).backward()
    assert all(t.grad is None for t in main + assist)


def _grads(student: Student, loss: torch.Tensor) -> dict[str, torch.Tensor | None]:
    student.zero_grad(set_to_none=True)
    loss.backward()
    return {
        "w_a": student.decoder.w_a.grad,
        "decoder_conv": student.decoder.up3[0].conv1.weight.grad,
        "amplifier": student.amplifier.levels[2][0][0].weight.grad,  # A3 feeds up2
    }


def _nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


def test_fusion_stop_gradient_variant() -> None:
    torch.manual_seed(0)
    kwargs = dict(decoder_blocks=(1, 1, 1), bottleneck_blocks=1)
    plain, detached = Student(TINY, **kwargs), Student(TINY, fuse_stopgrad=True, **kwargs)
    detached.load_state_dict(plain.state_dict())
    main, assist = _levels(TINY, 32), _levels(TINY, 32)
    a, b = plain(main, assist), detached(main, assist)
    for x, y in zip(a.fused + a.decoded, b.fused + b.decoded):
        torch.testing.assert_close(x, y, rtol=0, atol=0)

    s_loss = _grads(plain, cosine_distill(plain(main, assist).fused, main))
    assert all(_nonzero(g) for g in s_loss.values())
    s_loss = _grads(detached, cosine_distill(detached(main, assist).fused, main))
    assert _nonzero(s_loss["w_a"]) and not _nonzero(s_loss["decoder_conv"]) and not _nonzero(s_loss["amplifier"])

    d_loss = _grads(plain, cosine_distill(plain(main, assist).decoded, main))
    assert _nonzero(d_loss["w_a"])
    d_loss = _grads(detached, cosine_distill(detached(main, assist).decoded, main))
    assert not _nonzero(d_loss["w_a"]) and _nonzero(d_loss["decoder_conv"]) and _nonzero(d_loss["amplifier"])


def test_decoder_needs_amplifier_outputs_when_fusing() -> None:
    decoder = Decoder(TINY, blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="amplified"):
        decoder(torch.rand(1, 2 * TINY[2], 2, 2))


def test_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    student = Student(TINY, decoder_blocks=(1, 1, 1), bottleneck_blocks=1).eval()
    main, assist = _levels(TINY, 32), _levels(TINY, 32)
    with torch.no_grad():
        ref = student(main, assist)
        student.to(memory_format=torch.channels_last)
        out = student(*([t.to(memory_format=torch.channels_last) for t in ts] for ts in (main, assist)))
    for x, y in zip(ref.fused + ref.filtered, out.fused + out.filtered):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
