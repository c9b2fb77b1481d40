"""`trd reproduce` on a fixture in MVTec 3D-AD layout: per-category runs and the paper table."""

from __future__ import annotations

import shutil

from trd import api


def test_reproduce_writes_the_table_beside_the_published_numbers(tiny_cfg, synth_root, tmp_path):
    root = tmp_path / "mvtec3d"
    shutil.copytree(synth_root / "puck", root / "bagel")  # a real MVTec 3D-AD category name
    tiny_cfg.data.root = str(root)
    tiny_cfg.train.epochs = 1
    text = api.reproduce(tiny_cfg, tmp_path / "runs", ["bagel"], log=lambda _: None)
    assert (tmp_path / "runs" / "bagel" / "model.pt").is_file()
    assert (tmp_path / "runs" / "reproduction.md").read_text() == text
    for header in ("I-AUROC", "P-AUROC", "AUPRO@30%"):
        assert header in text
    assert "98.9" in text  # published TRD RGB+Normal I-AUROC for bagel
    assert "bagel" in text and "dowel" in text  # all ten columns, missing ones marked
