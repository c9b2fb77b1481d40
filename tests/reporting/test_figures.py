"""Per-sample pictures: one PNG per image of the expected size, deterministic bytes, outlines drawn,
clear input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.reporting.figures import TRUTH_COLOUR, heatmap_overlay, save_heatmap_png, save_sample_images, to_uint8_image

S = 64


def _sample(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    x3d = rng.random((3, S, S)).astype(np.float32)
    gt = np.zeros((S, S), dtype=bool)
    gt[20:36, 24:40] = True
    amap = rng.random((S, S)).astype(np.float32) * 4.0
    return {"rgb": rgb, "x3d": x3d, "gt": gt, "amap": amap}


def _pictures(folder: Path, s: dict, branches: tuple[str, ...] = ("rgb", "geo"), gt: bool = True,
              outlines: list | None = None) -> list:
    return save_sample_images(folder, "samples/crack/000", rgb=s["rgb"], x3d=s["x3d"], gt=s["gt"] if gt else None,
                              anomaly_map=s["amap"], branch_maps={b: s["amap"] / 4.0 for b in branches},
                              scale=(0.0, 4.0, 2.0), outlines=outlines or [], outline_scale=(0.5, 0.5))


def test_to_uint8_image_scales_and_replicates_channels() -> None:
    x = np.stack([np.zeros((2, 2)), np.full((2, 2), 0.5), np.ones((2, 2))]).astype(np.float32)
    img = to_uint8_image(x)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[0, 0].tolist() == [0, 128, 255]
    depth = to_uint8_image(np.array([[[2.0, np.nan]]]))  # 1 channel, out of range, NaN
    assert depth.shape == (1, 2, 3) and depth[0, 0].tolist() == [255] * 3 and depth[0, 1].tolist() == [0] * 3
    with pytest.raises(ValueError, match="CHW"):
        to_uint8_image(np.zeros((4, 4)))


def test_heatmap_overlay_uses_the_fixed_scale() -> None:
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    amap = np.array([[0.0, 1.0], [5.0, -3.0]])
    out = heatmap_overlay(rgb, amap, vmin=0.0, vmax=1.0, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert (out[1, 0] == out[0, 1]).all() and (out[1, 1] == out[0, 0]).all()  # clipped to the scale
    assert out[0, 1, 0] > out[0, 1, 2] and out[0, 0, 2] > out[0, 0, 0]  # jet: high red, low blue
    assert (heatmap_overlay(rgb, amap, 0.0, 1.0, alpha=0.0) == 0).all()
    with pytest.raises(ValueError, match="shape"):
        heatmap_overlay(rgb, np.zeros((3, 3)), 0.0, 1.0)
    with pytest.raises(ValueError, match="vmin < vmax"):
        heatmap_overlay(rgb, amap, 1.0, 1.0)


def test_heatmap_png_is_valid_and_deterministic(tmp_path: Path) -> None:
    s = _sample()
    a, b = tmp_path / "a.png", tmp_path / "sub" / "b.png"
    save_heatmap_png(a, s["rgb"], s["amap"], 0.0, 4.0)
    save_heatmap_png(b, s["rgb"], s["amap"], 0.0, 4.0)
    with Image.open(a) as im:
        assert im.format == "PNG" and im.size == (S, S) and im.mode == "RGB"
        assert (np.asarray(im) == heatmap_overlay(s["rgb"], s["amap"], 0.0, 4.0)).all()
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png", "b.png"]  # no temp files


@pytest.mark.parametrize(("branches", "gt"), [(("rgb", "geo"), True), (("fused",), False)])
def test_one_png_per_picture_with_captions_and_scales(tmp_path: Path, branches: tuple[str, ...], gt: bool) -> None:
    s = _sample()
    pictures = _pictures(tmp_path / "a", s, branches, gt)
    assert [p.path for p in pictures] == [f"samples/crack/000/{n}.png" for n in
                                          ("rgb", "3d", "heatmap", *(f"heatmap-{b}" for b in branches))]
    assert [p.scale for p in pictures] == [None, None] + [(0.0, 4.0, 2.0)] * (1 + len(branches))
    assert ("true defect outlined" in pictures[0].caption) == gt and "student" in pictures[-1].caption
    for p in pictures:
        with Image.open(tmp_path / "a" / p.path) as im:
            assert im.format == "PNG" and im.size == (S, S)
    rgb = np.asarray(Image.open(tmp_path / "a" / pictures[0].path))
    truth_edge = (rgb == TRUTH_COLOUR).all(axis=2)
    assert truth_edge.any() == gt and not truth_edge[25:31, 29:35].any()  # the edge only, not the inside
    _pictures(tmp_path / "b", s, branches, gt)
    for p in pictures:  # deterministic bytes
        assert (tmp_path / "a" / p.path).read_bytes() == (tmp_path / "b" / p.path).read_bytes()


def test_outlines_are_drawn_on_the_heatmaps_at_the_pictures_scale(tmp_path: Path) -> None:
    s = _sample()
    square = [[(20.0, 20.0), (60.0, 20.0), (60.0, 60.0), (20.0, 60.0)]]  # in a 128 px original: 10..30 here
    pictures = _pictures(tmp_path, s, outlines=[(square, True)])
    heat = np.asarray(Image.open(tmp_path / pictures[2].path))
    plain = heatmap_overlay(s["rgb"], s["amap"], 0.0, 4.0)
    changed = (heat != plain).any(axis=2)
    rows, cols = np.nonzero(changed)
    assert changed[10, 10:30].all() and not changed[40:, 40:].any()
    assert rows.min() >= 8 and rows.max() <= 32 and cols.min() >= 8 and cols.max() <= 32
    assert (heat[20, 8:13] == 255).all(axis=1).any()  # a region that counts: white (on a dark line)


def test_pictures_reject_inconsistent_inputs(tmp_path: Path) -> None:
    s = _sample()
    with pytest.raises(ValueError, match="3D image"):
        save_sample_images(tmp_path, "x", rgb=s["rgb"], x3d=s["x3d"][:, :32], gt=None, anomaly_map=s["amap"],
                           branch_maps={}, scale=(0.0, 1.0, 0.5), outlines=[])
    with pytest.raises(ValueError, match="anomaly map"):
        save_sample_images(tmp_path, "x", rgb=s["rgb"], x3d=s["x3d"], gt=None, anomaly_map=s["amap"][:8],
                           branch_maps={}, scale=(0.0, 1.0, 0.5), outlines=[])
    assert not list(tmp_path.rglob("*.png"))
