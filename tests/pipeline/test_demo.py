"""``trd demo`` end to end (the README's main command), shrunk: 64 px model, 1 epoch, random teachers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trd import api
from trd.workflows.demo import branch_table
from trd.cli import main

from .conftest import TINY


def test_demo_writes_reports_and_both_tables(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "demo"
    overrides = [*TINY, "train.epochs=1"]
    args = ["trd", "demo", "--out", str(out), "--backbone-weights", "none", "--variants", "trd"]
    monkeypatch.setattr("sys.argv", [*args, *[x for item in overrides for x in ("--set", item)]])
    main()
    printed = capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    assert "score.foreground_only=true" in summary and "train.epochs=1" in summary  # settings are stated
    for category in ("puck", "tile"):
        for variant in ("trd",):
            assert (out / category / variant / "report.html").is_file()
            assert (out / category / variant / "model.pt").is_file()
            assert f"{category}/{variant}: I-AUROC" in printed
    rows = [line for line in summary.splitlines() if re.match(r"\| (puck|tile) \|", line)]
    # per category: one row in the variant table, two (rgb, 3d) in the branch table
    assert len(rows) == 2 * 1 + 2 * 2
    header = next(line for line in summary.splitlines() if line.startswith("| category | variant | I-AUROC"))
    assert header.split(" | ")[2:5] == ["I-AUROC color", "I-AUROC crack", "I-AUROC dent"]
    for row in rows:
        values = [float(v) for v in row.strip("| ").split(" | ") if re.fullmatch(r"\d\.\d{3}", v)]
        assert len(values) >= 3 and all(0.0 <= v <= 1.0 for v in values), row
    branch_rows = [r for r in rows if r.split(" | ")[2] in ("rgb", "geo")]
    assert sorted(r.split(" | ")[2] for r in branch_rows) == ["geo", "geo", "rgb", "rgb"]


def test_branch_table_layout() -> None:
    results = {"puck": {"trd": {"branch_i_auroc_per_defect": {"rgb": {"color": 0.9, "dent": 0.5}},
                                "per_defect": {"color": {}, "dent": {}}}}}
    assert branch_table(results).splitlines()[2] == "| puck | trd | rgb | 0.900 | 0.500 |"


def test_demo_refuses_unknown_variants_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "demo"
    monkeypatch.setattr("sys.argv", ["trd", "demo", "--out", str(out), "--variants", "trd, no_such"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "no_such" in capsys.readouterr().err and not out.exists()
