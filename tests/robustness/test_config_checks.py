"""Every setting is checked at the door: a bad value stops ``trd fit`` before anything is written,
with one line naming the setting and what it accepts (never a data file, never a traceback)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from trd.config import RULES, Config, load_config
from trd.errors import ConfigError

#: (override, what the message must say). Today's main accepted or crashed on each (issue 9).
BAD_SETTINGS = [
    ("train.epochs=0", "train.epochs=0 is out of range: expected an integer >= 1"),
    ("train.epochs=-1", "train.epochs=-1 is out of range"),
    ("train.epochs=1.9", "train.epochs='1.9' is not valid: expected an integer"),
    ("train.epochs=true", "train.epochs='true' is not valid: expected an integer"),
    ("train.batch_size=0", "train.batch_size=0 is out of range: expected an integer >= 1"),
    ("train.lr=-1", "train.lr=-1.0 is out of range: expected a number > 0"),
    ("train.lr=nan", "train.lr=nan is out of range"),
    ("train.betas=2,3", "train.betas=2.0,3.0 is out of range: expected 2 numbers in [0, 1)"),
    ("train.betas=0.5", "train.betas=0.5 is out of range"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range: expected an integer in 0..64"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0 is out of range"),
    ("score.target_fpr=2", "score.target_fpr=2.0 is out of range: expected a number in (0, 1)"),
    ("score.sigma=-1", "score.sigma=-1.0 is out of range"),
    ("train.teacher_cache_gb=-1", "train.teacher_cache_gb=-1.0 is out of range"),
    ("data.image_size=100", "data.image_size=100 is out of range: expected a multiple of 32"),
    ("data.sobel_k=4", "data.sobel_k=4 is out of range: expected an odd integer in 1..31"),
    ("data.xyz_unit=inch", "data.xyz_unit='inch' is out of range: expected one of m, cm, mm, um"),
    ("train.precision=fp8", "train.precision='fp8' is out of range"),
    ("model.backbone=resnet7", "unknown backbone 'resnet7'"),
    ("model.variant=best", "unknown model.variant 'best'"),
    ("train.fused_adam=maybe", "train.fused_adam='maybe' is not valid: expected true or false"),
    # Values that passed the checks, then crashed or hung after the work (issue 23.11): each numeric
    # setting tried at an absurd value (tiny fit, 150 s limit); these four failed only later
    # (train.lr=1e30 is test_training_stops_at_the_first_non_finite_loss).
    ("score.sigma=1e12", "score.sigma=1000000000000.0 is out of range: expected a smoothing sigma in pixels, 0 "
                         "(none) to data.image_size (64)"),  # trained, then a 64 TB kernel
    ("data.image_size=1048576", "data.image_size=1048576 is out of range: expected a multiple of 32 in 32..2048"),
    ("model.bottleneck_blocks=100000", "model.bottleneck_blocks=100000 is out of range: expected an integer in 1..64"),
    ("data.num_workers=100000", "data.num_workers=100000 is out of range: expected an integer in 0..64"),
    ("score.stats_share=0", "score.stats_share=0.0 is out of range: expected a share in (0, 1]"),
    ("score.min_area_mm2=-2", "score.min_area_mm2=-2.0 is out of range: expected an area in mm^2 >= 0 (0: no rule)"),
    ("score.min_depth_mm=inf", "score.min_depth_mm=inf is out of range: expected a depth in mm >= 0 (0: no rule)"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SETTINGS, ids=[b[0] for b in BAD_SETTINGS])
def test_bad_setting_stops_fit_before_anything_is_written(override: str, message: str, rob_root: Path, rob_cache: Path,
                                                          tmp_path: Path, tools: SimpleNamespace, messages) -> None:
    run = tmp_path / "run"
    result = tools.run_cli_inprocess(*tools.fit_args(rob_root, rob_cache, run, "--no-test", "--set", override))
    assert result.code == 2, result.stdout
    (line,) = tools.visible_lines(result.stderr)
    assert line.startswith("error: ") and message in line, line
    assert str(rob_root) not in line  # a settings error blames the setting, not a data file
    assert not run.exists()
    messages.record("setting", f"--set {override}", line)


def test_toml_values_are_checked_like_overrides(tmp_path: Path) -> None:
    for text, message in [("[train]\nepochs = 1.9\n", "expected an integer"),
                          ("[train]\nepochs = true\n", "expected an integer"),
                          ("[score]\nsigma = -1.0\n", "score.sigma=-1.0 is out of range"),
                          ("[train]\nbetas = [0.5, 1.5]\n", "train.betas=0.5,1.5 is out of range")]:
        path = tmp_path / "run.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            load_config(path)
    path.write_text("[train]\nepochs = 0\n")  # a file value that an override then fixes is fine
    assert load_config(path, ["train.epochs=3"]).train.epochs == 3


def test_reject_rules_need_point_clouds(messages) -> None:
    with pytest.raises(ConfigError, match="score.min_area_mm2 needs point clouds") as refused:
        load_config(None, ["data.format=eyecandies", "score.min_area_mm2=2"])
    assert "set it to 0" in str(refused.value)
    messages.record("setting", "--set score.min_area_mm2=2 with data.format=eyecandies (normal maps)",
                    f"error: {refused.value}")
    assert load_config(None, ["score.min_area_mm2=2", "score.min_depth_mm=0.2"]).score.min_depth_mm == 0.2


def test_every_setting_has_a_rule() -> None:
    cfg = Config()
    fields = {f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))}
    assert fields == set(RULES)


def test_a_toml_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 3\n")  # as Notepad saves UTF-8
    assert load_config(path).train.epochs == 3


def test_training_stops_at_the_first_non_finite_loss(rob_root: Path, rob_cache: Path, tmp_path: Path,
                                                     tools: SimpleNamespace, messages) -> None:
    run = tmp_path / "run"  # 3 epochs of 8 steps, the train state written after each (train.keep_state)
    args = tools.fit_args(rob_root, rob_cache, run, "--no-test", "--set", "train.lr=1e30",
                          "--set", "train.checkpoint_minutes=0")
    result = tools.run_cli_inprocess(*args)
    lines = tools.visible_lines(result.stderr)
    assert result.code == 2 and lines[-1].startswith("error: training stopped in epoch 1: the "), result.stderr
    assert "train.lr=1e+30 is probably too high (default 0.005)" in lines[-1]
    assert not [line for line in lines if line.startswith("epoch ")]  # stopped inside epoch 1, not after 3
    assert sorted(p.name for p in run.iterdir()) == ["config.toml"]  # no state, no model (the lock is removed)
    messages.record("setting", "--set train.lr=1e30 (training diverges)", lines[-1])


def test_reproduce_refuses_a_category_of_another_dataset_at_the_door(rob_root: Path, tmp_path: Path,
                                                                      tools: SimpleNamespace, messages) -> None:
    result = tools.run_cli_inprocess("reproduce", "--data", str(rob_root), "--out", str(tmp_path / "paper"),
                                     "--categories", "puck", "--dry-run")  # puck: MVTec layout, not MVTec 3D-AD
    (line,) = tools.visible_lines(result.stderr)
    assert result.code == 2 and line.startswith("error: --categories: puck is not an MVTec 3D-AD category (known: "
                                                "bagel, "), result.stderr
    assert not (tmp_path / "paper").exists()
    messages.record("setting", "trd reproduce --categories with a category not in MVTec 3D-AD", line)
