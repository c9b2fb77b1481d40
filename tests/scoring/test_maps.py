"""Anomaly maps, the scipy-exact Gaussian blur, streaming validation statistics and the Scorer."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from trd.data.geometry import input_foreground
from trd.data.transforms import normalise
from trd.errors import TRDError
from trd.model.trd import cosine_distance_map
from trd.scoring.maps import STD_EPS, BranchStats, GaussianBlur, Scorer


def _scipy_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Reference: scipy per B x 1 x H x W map, the reference code's call."""
    return np.stack([ndimage.gaussian_filter(m[0], sigma, truncate=4.0, mode="reflect") for m in x])[:, None]


def _oracle(maps: dict[str, torch.Tensor], stats: dict[str, tuple[float, float]], sigma: float) -> dict[str, np.ndarray]:
    """The reference pipeline in numpy/scipy: z-score each branch, add, blur, max; and each
    branch's blurred z-value at the fused maximum (its branch share)."""
    blurred = {b: _scipy_blur((m.double().numpy() - stats[b][0]) / max(stats[b][1], STD_EPS), sigma)
               for b, m in maps.items()}
    fused = sum(blurred.values())
    flat = fused.reshape(len(fused), -1)
    arg = flat.argmax(axis=1)
    out = {"anomaly_map": fused, "score": flat.max(axis=1)}
    for b, z in blurred.items():
        out[f"share_{b}"] = z.reshape(len(z), -1)[np.arange(len(z)), arg]
    return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 40), (5, 7), (17, 9), (64, 48)])
@pytest.mark.parametrize("sigma", [4.0, 1.5, 0.7])
def test_blur_equals_scipy(shape: tuple[int, int], sigma: float) -> None:
    # (1, 1), (3, 40), (5, 7) are smaller than the radius 16 of sigma 4: repeated reflection
    x = np.random.default_rng(0).normal(size=(2, 1, *shape))
    expected = _scipy_blur(x, sigma)
    blur = GaussianBlur(sigma)
    np.testing.assert_allclose(blur(torch.from_numpy(x)).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(blur(torch.from_numpy(x).float()).numpy(), expected, rtol=0, atol=1e-5)


def test_blur_radius_and_identity() -> None:
    assert GaussianBlur(4.0).radius == 16 and GaussianBlur(4.0).weight.numel() == 33
    assert GaussianBlur(1.5, truncate=3.0).radius == 5  # int(4.5 + 0.5)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(GaussianBlur(0.0)(x), x)
    assert torch.equal(GaussianBlur(-1.0)(x), x)


def test_blur_batches_channels_independently() -> None:
    x = torch.rand(2, 3, 10, 12, dtype=torch.float64)
    y = GaussianBlur(2.0)(x)
    for c in range(3):
        np.testing.assert_allclose(y[:, c : c + 1].numpy(), _scipy_blur(x[:, c : c + 1].numpy(), 2.0), atol=1e-12)


def _features_at_angles(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student (cos a, sin a) and teacher (1, 0) per pixel: distance 1 - cos a."""
    student = torch.stack([torch.cos(angles), torch.sin(angles)]).unsqueeze(0)
    return student.double(), torch.stack([torch.ones_like(angles), torch.zeros_like(angles)]).unsqueeze(0).double()


def test_cosine_distance_map_hand_computed() -> None:
    # level 1: 2x2 with distances [[0, 1], [1, 2]] (angles 0, 90, 90, 180 degrees), i.e. d = row + col;
    # upsampled to 4x4 with align_corners=True it samples rows/cols 0, 1/3, 2/3, 1: d = (i + j) / 3.
    s1, t1 = _features_at_angles(torch.tensor([[0.0, 0.5], [0.5, 1.0]]) * torch.pi)
    # level 2: 1x1 with distance 1 (90 degrees), constant after upsampling
    s2, t2 = _features_at_angles(torch.tensor([[0.5]]) * torch.pi)
    got = cosine_distance_map([s1, s2], [t1, t2], 4)
    i = torch.arange(4.0)
    expected = (i[:, None] + i[None, :]) / 3 + 1.0
    assert got.shape == (1, 1, 4, 4)
    torch.testing.assert_close(got[0, 0], expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        cosine_distance_map([s1], [t1, t2], 3)


def test_cosine_distance_identical_features_is_zero() -> None:
    feats = [torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2)]
    assert cosine_distance_map(feats, feats, 8).abs().max() < 1e-6


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.integers(0, 2**16))
def test_branch_stats_streaming_equals_numpy(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    batches = [rng.normal(3.0, 0.01, size=(k, 1, 2, 3)) for k in sizes]
    acc = BranchStats()
    for b in batches:
        acc.update(torch.from_numpy(b))
    everything = np.concatenate([b.ravel() for b in batches])
    assert acc.count == everything.size
    assert acc.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert acc.std == pytest.approx(everything.std(), rel=1e-9)
    # merging two halves (e.g. from two processes) gives the same statistics
    left, right = BranchStats(), BranchStats()
    for i, b in enumerate(batches):
        (left if i % 2 else right).update(b)
    left.merge(right)
    assert left.mean == pytest.approx(acc.mean, rel=1e-12) and left.std == pytest.approx(acc.std, rel=1e-9)


def test_branch_stats_checkpoint_roundtrip_and_guards() -> None:
    acc = BranchStats()
    acc.update(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    again = BranchStats.from_dict(acc.as_dict())
    assert (again.count, again.mean, again.std) == (4, 2.5, pytest.approx(np.std([1, 2, 3, 4])))
    with pytest.raises(TRDError, match="no validation maps"):
        _ = BranchStats().std
    with pytest.raises(TRDError, match="NaN"):
        acc.update(torch.tensor([float("nan")]))
    flat = BranchStats()
    flat.update(torch.full((5,), 0.25))
    assert flat.std == 0.0 and flat.scale == STD_EPS  # constant validation maps: finite z-scores
    scorer = Scorer(["rgb"], sigma=1.0)
    scorer.set_stats({"rgb": flat})
    out = scorer({"rgb": torch.full((1, 1, 4, 4), 0.25)})
    assert torch.isfinite(out["anomaly_map"]).all() and out["score"].item() == 0.0


def _two_branches(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, tuple[float, float]]]:
    gen = torch.Generator().manual_seed(seed)
    maps = {"rgb": torch.rand(3, 1, 20, 24, generator=gen, dtype=torch.float64),
            "geo": 2.0 * torch.rand(3, 1, 20, 24, generator=gen, dtype=torch.float64)}
    return maps, {"rgb": (0.4, 0.2), "geo": (0.9, 0.5)}


def test_scorer_equals_the_reference_pipeline_and_guards() -> None:
    maps, stats = _two_branches()
    scorer = Scorer(["rgb", "geo"], sigma=4.0).double()
    assert not scorer.fitted
    assert torch.isnan(scorer(maps)["score"]).all()  # uncalibrated: NaN, never raw scores
    scorer.set_stats(stats)
    assert scorer.fitted
    out = scorer(maps)
    expected = _oracle(maps, stats, 4.0)
    for key, value in expected.items():
        np.testing.assert_allclose(out[key].numpy(), value, atol=1e-12, err_msg=key)
    torch.testing.assert_close(out["share_rgb"] + out["share_geo"], out["score"])
    single = out["scored_geo"]  # per-branch metrics: z-scored, blurred, alone
    np.testing.assert_allclose(single.numpy(), _scipy_blur((maps["geo"].numpy() - 0.9) / 0.5, 4.0), atol=1e-12)
    assert set(scorer.state_dict()) == {"norm.rgb.mean", "norm.rgb.std", "norm.geo.mean", "norm.geo.std"}
    with pytest.raises(RuntimeError, match="norm.geo"):
        Scorer(["rgb"]).load_state_dict(scorer.state_dict())
    with pytest.raises(ValueError):
        Scorer(["rgb", "depth"])
    with pytest.raises(ValueError, match="geo"):
        scorer.set_stats({"rgb": (0.4, 0.2)})


def test_branch_shares_attribute_a_spike_to_its_branch() -> None:
    _, stats = _two_branches()
    scorer = Scorer(["rgb", "geo"], sigma=2.0)
    scorer.set_stats(stats)
    # a spike in the colour branch only: the score comes from colour, geometry stays at its mean
    flat = {"rgb": torch.full((1, 1, 16, 16), 0.4), "geo": torch.full((1, 1, 16, 16), 0.9)}
    flat["rgb"][0, 0, 8, 8] = 5.0
    out = scorer(flat)
    centre = scorer.blur.weight[scorer.blur.radius].item() ** 2  # the blurred spike's peak, per unit of z
    assert out["share_rgb"].item() == pytest.approx((5.0 - 0.4) / 0.2 * centre, rel=1e-5)
    assert abs(out["share_geo"].item()) < 1e-6


def test_scorer_torchscript_and_onnx() -> None:
    maps = {"rgb": torch.rand(2, 1, 32, 32), "geo": torch.rand(2, 1, 32, 32)}
    foreground = torch.rand(2, 1, 32, 32) > 0.7
    scorer = Scorer(["rgb", "geo"], foreground_margin=1)
    scorer.set_stats({"rgb": (0.5, 0.1), "geo": (0.4, 0.3)})
    expected = scorer(maps, foreground)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(scorer)
    for key, value in scripted(maps, foreground).items():
        torch.testing.assert_close(value, expected[key])

    ort = pytest.importorskip("onnxruntime")  # installed with the package

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scorer = scorer

        def forward(self, rgb: torch.Tensor, x3d: torch.Tensor, fg: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.scorer({"rgb": rgb, "geo": x3d}, fg)
            return out["anomaly_map"], out["score"], out["share_rgb"], out["share_geo"]

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(), (maps["rgb"], maps["geo"], foreground), buffer, dynamo=False,
                          input_names=["rgb", "x3d", "fg"])
    session = ort.InferenceSession(buffer.getvalue())
    got = session.run(None, {"rgb": maps["rgb"].numpy(), "x3d": maps["geo"].numpy(), "fg": foreground.numpy()})
    for value, key in zip(got, ["anomaly_map", "score", "share_rgb", "share_geo"]):
        np.testing.assert_allclose(value, expected[key].numpy(), atol=1e-5)


def test_scorer_foreground_only_keeps_scores_on_the_object() -> None:
    maps, stats = _two_branches()
    foreground = torch.zeros(3, 1, 20, 24, dtype=torch.bool)
    foreground[:, :, 5:15, 6:18] = True
    maps["rgb"][:, :, 0, 0] = 50.0  # a border artefact far off the object
    plain = Scorer(["rgb", "geo"], sigma=1.0).double()
    plain.set_stats(stats)
    assert plain.scored_region(foreground) is None  # off: every pixel is scored (the paper)
    torch.testing.assert_close(plain(maps, foreground)["score"], plain(maps)["score"])
    for margin in (0, 2):
        scorer = Scorer(["rgb", "geo"], sigma=1.0, foreground_margin=margin).double()
        scorer.set_stats(stats)
        out = scorer(maps, foreground)
        region = scorer.scored_region(foreground)
        assert int(region[0].sum()) == (10 + 2 * margin) * (12 + 2 * margin)
        inside = plain(maps)["anomaly_map"].masked_fill(~region, -torch.inf)
        torch.testing.assert_close(out["score"], inside.amax(dim=(1, 2, 3)))  # max over the object only
        torch.testing.assert_close(out["share_rgb"] + out["share_geo"], out["score"])
        torch.testing.assert_close(out["anomaly_map"][region], plain(maps)["anomaly_map"][region])
        single = out["scored_rgb"]
        for image, inside_image in zip(single, region, strict=True):  # off the object: the image's minimum
            assert bool((image[~inside_image] == image.amin()).all())
    with pytest.raises(ValueError, match="foreground_margin"):
        Scorer(["rgb"], foreground_margin=-1)


def test_input_foreground_reads_the_mask_inside_the_3d_input() -> None:
    image = np.zeros((3, 8, 8), np.float32)
    image[:, 2:5, 3:6] = np.array([0.5, 0.5, 1.0], np.float32)[:, None, None]  # a normal pointing up
    image[0, 7, 7] = 0.01  # barely non-zero, still a surface
    found = input_foreground(torch.from_numpy(normalise(image))[None])
    expected = np.zeros((1, 1, 8, 8), bool)
    expected[..., 2:5, 3:6] = True
    expected[..., 7, 7] = True
    np.testing.assert_array_equal(found.numpy(), expected)
