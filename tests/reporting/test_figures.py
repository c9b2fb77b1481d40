"""Per-sample figures: valid PNGs of the expected size, deterministic bytes, clear input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trd.reporting.figures import (
    PANEL_COL_INCHES,
    PANEL_DPI,
    PANEL_HEIGHT_INCHES,
    heatmap_overlay,
    save_heatmap_png,
    save_panel_png,
    to_uint8_image,
)

S = 64


def _sample(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
    x3d = rng.random((3, S, S)).astype(np.float32)
    gt = np.zeros((S, S), dtype=bool)
    gt[20:36, 24:40] = True
    amap = rng.random((S, S)).astype(np.float32) * 4.0
    return {"rgb": rgb, "x3d": x3d, "gt": gt, "amap": amap}


def _panel(path: Path, s: dict, branches: tuple[str, ...] = ("rgb", "geo"), gt: bool = True) -> None:
    save_panel_png(
        path,
        rgb=s["rgb"],
        x3d=s["x3d"],
        gt=s["gt"] if gt else None,
        anomaly_map=s["amap"],
        branch_maps={b: s["amap"] / 4.0 for b in branches},
        vmin=0.0,
        vmax=4.0,
        branch_ranges={b: (0.0, 1.0) for b in branches},
        title="bagel/test/crack/000.png  crack  score=3.21  rgb 60% / 3d 40%",
    )


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
def test_panel_png_size_and_determinism(tmp_path: Path, branches: tuple[str, ...], gt: bool) -> None:
    s = _sample()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _panel(a, s, branches, gt)
    _panel(b, s, branches, gt)
    cols = 4 + len(branches)
    with Image.open(a) as im:
        im.verify()
    with Image.open(a) as im:
        assert im.format == "PNG"
        assert im.size == (round(cols * PANEL_COL_INCHES * PANEL_DPI), round(PANEL_HEIGHT_INCHES * PANEL_DPI))
        assert np.asarray(im.convert("L")).std() > 0  # something was drawn
    assert a.read_bytes() == b.read_bytes()


def test_panel_content_depends_on_the_maps(tmp_path: Path) -> None:
    s = _sample()
    _panel(tmp_path / "a.png", s)
    s2 = dict(s, amap=s["amap"][::-1].copy())
    _panel(tmp_path / "b.png", s2)
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()


def test_panel_rejects_inconsistent_inputs(tmp_path: Path) -> None:
    s = _sample()
    with pytest.raises(ValueError, match="colour range"):
        save_panel_png(
            tmp_path / "x.png", rgb=s["rgb"], x3d=s["x3d"], gt=None, anomaly_map=s["amap"],
            branch_maps={"rgb": s["amap"]}, vmin=0.0, vmax=1.0, branch_ranges={}, title="t",
        )
    with pytest.raises(ValueError, match="3D image"):
        save_panel_png(
            tmp_path / "x.png", rgb=s["rgb"], x3d=s["x3d"][:, :32], gt=None, anomaly_map=s["amap"],
            branch_maps={}, vmin=0.0, vmax=1.0, branch_ranges={}, title="t",
        )
    assert not list(tmp_path.iterdir())
