"""The defaults are the paper protocol (docs/METHOD.md §9): fp32, the reference's epochs per dataset,
the reference's exact per-class Sobel table as a preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trd.config import PAPER_EPOCHS, Config, DataConfig, load_config, save_config
from trd.data.inputs import preprocess_params
from trd.data.samples import MVTEC3D_CATEGORIES
from trd.training.device import resolve_precision

PAPER_TOML = Path(__file__).resolve().parents[1] / "configs" / "paper.toml"
#: The reference's table (docs/METHOD.md §2.6), written out for every MVTec 3D-AD category.
REFERENCE_SOBEL = {"bagel": 5, "cable_gland": 5, "carrot": 5, "cookie": 3, "dowel": 7, "foam": 7,
                   "peach": 5, "potato": 5, "rope": 5, "tire": 7}


def test_paper_config_and_defaults_are_fp32_with_the_reference_epochs() -> None:
    paper = load_config(PAPER_TOML)
    assert paper.train.precision == "fp32" and Config().train.precision == "fp32"
    assert paper.train.epochs == 200 and paper.data.format == "mvtec3d"
    assert paper.to_dict() == load_config().to_dict()  # the file states the defaults
    assert resolve_precision(paper.train.precision, torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(("overrides", "epochs"), [
    ([], 200),
    (["data.format=eyecandies"], 100),
    (["data.format=folder"], 200),
    (["data.format=eyecandies", "train.epochs=7"], 7),
    (["train.epochs=7", "data.format=eyecandies"], 7),  # an explicit value wins in any order
    (["train.epochs=200", "data.format=eyecandies"], 200),  # even when it equals a default
])
def test_epochs_follow_the_dataset_unless_set(overrides: list[str], epochs: int) -> None:
    assert load_config(None, overrides).train.epochs == epochs


def test_epochs_from_a_file_and_the_saved_config(tmp_path: Path) -> None:
    eyecandies = tmp_path / "eye.toml"
    eyecandies.write_text('[data]\nformat = "eyecandies"\n')
    assert load_config(eyecandies).train.epochs == PAPER_EPOCHS["eyecandies"] == 100
    assert load_config(PAPER_TOML, ["data.format=eyecandies"]).train.epochs == 100  # paper.toml leaves it open
    pinned = tmp_path / "pinned.toml"
    pinned.write_text('[train]\nepochs = 150\n')
    assert load_config(pinned, ["data.format=eyecandies"]).train.epochs == 150
    # The resolved value is saved, and reading it back keeps it (RUN/config.toml, model.pt).
    cfg = load_config(None, ["data.format=eyecandies"])
    save_config(cfg, tmp_path / "config.toml")
    assert "epochs = 100" in (tmp_path / "config.toml").read_text()
    assert load_config(tmp_path / "config.toml").to_dict() == cfg.to_dict()
    assert Config.from_dict(cfg.to_dict()).train.epochs == 100
    assert Config.from_dict({"data": {"format": "eyecandies"}, "train": {"epochs": 3}}).train.epochs == 3


@pytest.mark.parametrize("sobel_k", [3, 5, 7])
def test_sobel_preset_is_the_reference_table_whatever_sobel_k(sobel_k: int) -> None:
    cfg = DataConfig(sobel_k=sobel_k, sobel_preset="trd-per-class")
    assert set(REFERENCE_SOBEL) == set(MVTEC3D_CATEGORIES)
    assert {c: cfg.sobel_for(c) for c in MVTEC3D_CATEGORIES} == REFERENCE_SOBEL
    assert cfg.sobel_for("my_product") == 5  # the reference's "else 5"
    # ...and that is what the preprocessing (and its cache key) uses.
    assert preprocess_params(cfg, "cookie")["sobel_k"] == 3 and preprocess_params(cfg, "bagel")["sobel_k"] == 5
    # Without a preset the global aperture holds for every category.
    assert {DataConfig(sobel_k=sobel_k).sobel_for(c) for c in MVTEC3D_CATEGORIES} == {sobel_k}


def test_a_config_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Windows editors save UTF-8 with a BOM; tomllib alone refuses the file ("Invalid statement").
    path = tmp_path / "line.toml"
    path.write_bytes("\ufeff[train]\nepochs = 7\n".encode())
    assert load_config(path).train.epochs == 7
