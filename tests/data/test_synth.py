"""The synthetic dataset: layout and counts, determinism, atomic writes, and its physics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trd.data import synth
from trd.data.io import read_mask, read_rgb
from trd.data.readers.xyz_tiff import read_xyz
from trd.data.samples import list_categories, list_samples
from trd.data.synth import DEFECT_TYPES, DEFECTS_FILE, SYNTH_CATEGORIES, generate, render_sample
from trd.errors import ConfigError

SMALL = {"size": 32, "n_train": 2, "n_validation": 1, "n_test_good": 1, "n_test_per_defect": 1}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_reads_back_with_expected_counts(tmp_path: Path) -> None:
    counts = generate(tmp_path, **SMALL)
    assert list_categories("mvtec3d", tmp_path) == sorted(SYNTH_CATEGORIES)
    for cat in SYNTH_CATEGORIES:
        assert counts[cat] == {"train": {"good": 2}, "validation": {"good": 1},
                               "test": {"good": 1, **{d: 1 for d in DEFECT_TYPES}}}
        for split, per_defect in counts[cat].items():
            samples = list_samples("mvtec3d", tmp_path, cat, split)
            found: dict[str, int] = {}
            for s in samples:
                found[s.defect] = found.get(s.defect, 0) + 1
            assert found == per_defect
    names = sorted(p.name for p in (tmp_path / "tile" / "train" / "good" / "xyz").iterdir())
    assert names == ["000.tiff", "001.tiff"]


def test_written_files_match_the_rendered_arrays(synth_root: Path) -> None:
    for s in list_samples("mvtec3d", synth_root, "puck", "test"):
        rgb, xyz = read_rgb(s.rgb), read_xyz(s.xyz)
        assert rgb.shape == (64, 64, 3) and xyz.shape == (64, 64, 3)
        gt = s.rgb.parent.parent / "gt" / s.rgb.name
        assert gt.is_file()  # written for good test samples too (all zero), as in MVTec 3D-AD
        assert read_mask(gt, (64, 64)).any() == (s.defect != "good")
    s = next(s for s in list_samples("mvtec3d", synth_root, "puck", "test") if s.defect == "dent")
    rng = synth._sample_rng(0, "puck", "test", "dent", int(s.rgb.stem))
    rgb, xyz, mask = render_sample(rng, 64, "puck", "dent")
    np.testing.assert_array_equal(read_rgb(s.rgb), rgb)
    np.testing.assert_array_equal(read_xyz(s.xyz), xyz)
    np.testing.assert_array_equal(read_mask(s.mask), mask)


def test_generate_is_deterministic_and_independent_of_counts(tmp_path: Path) -> None:
    generate(tmp_path / "a", ["tile"], **SMALL)
    generate(tmp_path / "b", ["tile"], **SMALL)
    first = _tree(tmp_path / "a")
    assert first and first == _tree(tmp_path / "b")
    generate(tmp_path / "c", ["tile"], **{**SMALL, "n_train": 3, "n_test_per_defect": 2})
    more = _tree(tmp_path / "c")
    truth = "tile/" + DEFECTS_FILE  # each defect's true size: the same entries, and more of them
    assert all(more[name] == data for name, data in first.items() if name != truth)
    assert json.loads(first[truth]).items() <= json.loads(more[truth]).items()
    generate(tmp_path / "d", ["tile"], **{**SMALL, "seed": 1})
    assert _tree(tmp_path / "d")["tile/train/good/rgb/000.png"] != first["tile/train/good/rgb/000.png"]


def test_interrupted_generate_keeps_the_old_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate(tmp_path, ["puck"], **SMALL)
    before = _tree(tmp_path)
    calls = []

    def failing_write(*args: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_write(*args)

    real_write = synth._write_sample
    monkeypatch.setattr(synth, "_write_sample", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, ["puck"], **{**SMALL, "seed": 5})
    assert _tree(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["puck"]  # no staging folder left behind
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "new", ["puck"], **SMALL)
    assert list((tmp_path / "new").iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"categories": ["bagel"]}, "unknown synthetic category"), ({"size": 16}, "size"),
     ({"n_train": 0}, "n_train"), ({"n_test_good": -1}, "n_test_good")],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        generate(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match="unknown synthetic defect"):
        render_sample(np.random.default_rng(0), 64, "puck", "scratch")


def _pair(category: str, defect: str, seed: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    good = render_sample(np.random.default_rng(seed), 64, category, "good")
    bad = render_sample(np.random.default_rng(seed), 64, category, defect)
    return good, bad


@pytest.mark.parametrize("category", SYNTH_CATEGORIES)
def test_scene_geometry_suits_the_three_corner_plane_fit(category: str) -> None:
    for seed in range(3):
        rgb, xyz, mask = render_sample(np.random.default_rng(seed), 64, category, "good")
        assert rgb.dtype == np.uint8 and xyz.dtype == np.float32 and mask.dtype == bool and not mask.any()
        corners = [xyz[:3, :3], xyz[:3, -3:], xyz[-3:, :3]]
        assert all(np.all(c[..., 2] > 0.39) for c in corners)  # background, no dropouts
        p1, p2, p3 = (c.reshape(-1, 3).mean(axis=0) for c in corners)
        normal = np.cross(p3 - p1, p2 - p1)
        valid = xyz[..., 2] > 0
        dist = np.abs(xyz[valid] @ normal - normal @ p3) / np.linalg.norm(normal)
        assert 0.0095 < dist.max() < 0.02  # the object stands clear of the 5 mm threshold
        foreground = (dist > 0.005).mean()
        assert 0.1 < foreground < 0.4 and 0.38 < xyz[valid, 2].mean() < 0.41
        missing = ~valid
        assert 0 < missing.mean() < 0.05 and np.all(xyz[missing] == 0)


@pytest.mark.parametrize("category", SYNTH_CATEGORIES)
def test_color_defect_changes_rgb_only_inside_the_mask(category: str) -> None:
    for seed in range(3):
        (g_rgb, g_xyz, _), (rgb, xyz, mask) = _pair(category, "color", seed)
        assert 0.004 < mask.mean() < 0.03
        np.testing.assert_array_equal(xyz, g_xyz)
        diff = np.abs(rgb.astype(int) - g_rgb).sum(axis=2)
        assert not diff[~mask].any() and diff[mask].mean() > 30


@pytest.mark.parametrize("category", SYNTH_CATEGORIES)
def test_dent_changes_geometry_only_and_is_invisible_in_rgb(category: str) -> None:
    for seed in range(3):
        (g_rgb, g_xyz, _), (rgb, xyz, mask) = _pair(category, "dent", seed)
        assert 0.004 < mask.mean() < 0.03
        np.testing.assert_array_equal(rgb, g_rgb)
        np.testing.assert_array_equal(xyz[~mask], g_xyz[~mask])
        both = mask & (xyz[..., 2] > 0)
        dz = np.abs(xyz[..., 2] - g_xyz[..., 2])[both]
        assert dz.mean() > 0.001 and 0.0019 < dz.max() < 0.0041


@pytest.mark.parametrize("category", SYNTH_CATEGORIES)
def test_crack_changes_both_modalities_inside_the_mask(category: str) -> None:
    for seed in range(3):
        (g_rgb, g_xyz, _), (rgb, xyz, mask) = _pair(category, "crack", seed)
        assert mask.any()
        diff = np.abs(rgb.astype(int) - g_rgb).sum(axis=2)
        assert not diff[~mask].any() and diff[mask].mean() > 30
        np.testing.assert_array_equal(xyz[~mask], g_xyz[~mask])
        both = mask & (xyz[..., 2] > 0)
        assert np.all(xyz[..., 2][both] >= g_xyz[..., 2][both])  # a groove: farther from the camera
        assert (xyz[..., 2] - g_xyz[..., 2])[both].max() > 0.001
