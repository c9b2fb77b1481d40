"""TRDModel: variants, teacher freezing, per-student training, eval maps (tiny ResNet-18 models, 64 px)."""

from __future__ import annotations

import pytest
import torch

from trd.config import ModelConfig
from trd.errors import ConfigError
from trd.model import VARIANTS, TRDModel, build_model, student_parameter_counts
from trd.training.loss import student_loss

SIZE = 64


def _model(variant: str = "trd", **kwargs) -> TRDModel:
    cfg = ModelConfig("resnet18", "none", variant, decoder_blocks=[1, 1, 1], bottleneck_blocks=1, **kwargs)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="meaningless"):
        return build_model(cfg, SIZE)


def _batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, SIZE, SIZE, generator=g), torch.randn(n, 3, SIZE, SIZE, generator=g)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_gives_raw_maps_in_eval(variant: str) -> None:
    model = _model(variant).eval()
    with torch.no_grad():
        maps = model(*_batch())
    assert set(maps) == set(VARIANTS[variant].students) == set(model.students)
    for m in maps.values():
        assert m.shape == (2, 1, SIZE, SIZE)
        assert torch.isfinite(m).all() and m.min() >= 0 and m.max() <= 3 + 1e-5
    assert (model.teacher_rgb is not None) == ("rgb" in VARIANTS[variant].modalities)
    assert (model.teacher_geo is not None) == ("geo" in VARIANTS[variant].modalities)


def test_fused_teacher_variant_distills_the_concatenated_features() -> None:
    model = _model("rd_fused_teacher")
    feats = model.teacher_features(*_batch())
    targets = model.branch_targets(feats)["fused"]
    assert [t.shape[1] for t in targets] == [128, 256, 512]
    torch.testing.assert_close(targets[0], torch.cat([feats["rgb"][0], feats["geo"][0]], 1))
    assert not model.students["fused"].needs_assist


def test_teachers_are_separate_frozen_and_stay_in_eval() -> None:
    model = _model().train()
    assert model.teacher_rgb is not model.teacher_geo
    assert model.teacher_rgb.conv1.weight.data_ptr() != model.teacher_geo.conv1.weight.data_ptr()
    torch.testing.assert_close(model.teacher_rgb.state_dict(), model.teacher_geo.state_dict())
    assert not any(m.training for t in (model.teacher_rgb, model.teacher_geo) for m in t.modules())
    assert all(s.training for s in model.students.values())
    with pytest.raises(RuntimeError, match="teacher_features"):
        model(*_batch())


def test_sequential_training_lowers_the_loss_and_leaves_teachers_untouched() -> None:
    model = _model().train()
    teacher_before = {k: v.clone() for k, v in model.teacher_rgb.state_dict().items()}
    optims = {n: torch.optim.Adam(s.parameters(), lr=0.005, betas=(0.5, 0.999)) for n, s in model.students.items()}
    feats = model.teacher_features(*_batch(2))
    targets = model.branch_targets(feats)
    history = {name: [] for name in model.students}
    for _ in range(20):
        for name, optim in optims.items():  # one student graph alive at a time (method.md §4.2)
            loss = student_loss(model.students[name](*model.student_inputs(name, feats)), targets[name])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            history[name].append(loss.item())
    for name, losses in history.items():
        assert losses[-1] < 0.5 * losses[0], (name, losses)
    teachers = [*model.teacher_rgb.parameters(), *model.teacher_geo.parameters()]
    assert all(p.grad is None for p in teachers)
    torch.testing.assert_close(model.teacher_rgb.state_dict(), teacher_before, rtol=0, atol=0)


def test_channels_last_model_gives_the_same_maps() -> None:
    model = _model().eval()
    rgb, x3d = _batch()
    with torch.no_grad():
        ref = model(rgb, x3d)
        model.to(memory_format=torch.channels_last)
        out = model(rgb.to(memory_format=torch.channels_last), x3d.to(memory_format=torch.channels_last))
    for name in ref:
        torch.testing.assert_close(out[name], ref[name], rtol=1e-4, atol=1e-4)


def test_config_switches_reach_the_students() -> None:
    model = _model(fuse_stopgrad=True)
    assert all(s.decoder.fuse_stopgrad and len(s.decoder.up3) == 1 for s in model.students.values())
    assert model.image_size == SIZE and model.variant == "trd"


def test_parameter_counts_per_student() -> None:
    counts = student_parameter_counts(_model("trd_no_amplifier"))
    assert set(counts) == {"rgb", "geo"} and counts["rgb"] == counts["geo"]
    assert set(counts["rgb"]) == {"filter", "bottleneck", "decoder", "total"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant": "trd_plus"}, "rd_fused_teacher"),
        ({"backbone": "vgg16"}, "wide_resnet50_2"),
        ({"decoder_blocks": [1, 1]}, "decoder_blocks"),
        ({"bottleneck_blocks": 0}, "bottleneck_blocks"),
    ],
)
def test_invalid_settings_raise_config_errors(change: dict, message: str) -> None:
    cfg = ModelConfig(weights="none", **change)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, 256)


def test_image_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_model(ModelConfig(weights="none"), 100)
