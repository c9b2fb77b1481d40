"""``trd demo`` end to end (the README's main command), shrunk: 64 px model, 1 epoch, random teachers."""

from __future__ import annotations

import re
import warnings
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
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every warning raised reaches the CLI's one-line printer
        main()
    captured = capsys.readouterr()
    printed = captured.out
    summary = (out / "summary.md").read_text()
    assert "score.foreground_only=true" in summary and "train.epochs=1" in summary  # settings are stated
    assert summary.splitlines()[2].startswith("> **WARNING: Random teachers")  # the banner heads the summary
    warned = [ln for ln in captured.err.splitlines() if ln.startswith("warning: ") and "randomly initialised" in ln]
    assert len(warned) == 1  # once per run, not per model
    for category in ("puck", "tile"):
        for variant in ("trd",):
            assert (out / category / variant / "report.html").is_file()
            assert (out / category / variant / "model.pt").is_file()
            assert f"{category}/{variant}: I-AUROC" in printed
    parts = {p.split("\n", 1)[0]: p for p in summary.split("\n## ")[1:]}

    def rows(title: str) -> list[str]:
        return [line for line in parts[title].splitlines() if re.match(r"\| (puck|tile) \|", line)]

    detection, branches = rows("Detection: I-AUROC per defect type"), rows("I-AUROC per defect type, each branch alone")
    assert len(detection) == 2 and len(branches) == 2 * 2
    header = next(line for line in summary.splitlines() if line.startswith("| category | variant | I-AUROC"))
    assert header.split(" | ")[2:5] == ["I-AUROC color", "I-AUROC crack", "I-AUROC dent"]
    for row in detection + branches:
        values = [float(v) for v in row.strip("| ").split(" | ") if re.fullmatch(r"\d\.\d{3}", v)]
        assert len(values) >= 3 and all(0.0 <= v <= 1.0 for v in values), row
    assert sorted(r.split(" | ")[2] for r in branches) == ["geo", "geo", "rgb", "rgb"]
    # the guarantee line and the realised rate on the test good images, per run
    decisions = rows("Decisions at the deployment thresholds")
    # 10 validation samples: 2 give the normalisation statistics, the other 8 the thresholds (k = 1: 1/9)
    promise = "<= 11.1 % on average, <= 25 % with 90 % confidence (n = 8)"
    assert len(decisions) == 2 and all(promise in r and "/10 = " in r for r in decisions)
    assert parts["Decisions at the deployment thresholds"].count(
        "false-positive rate <= 11.1 % on average over validation sets; this threshold <= 25 % with 90 % confidence "
        "(n = 8 validation samples)") == 2
    assert "cannot support the requested 1 %" in parts["Decisions at the deployment thresholds"]
    assert len(rows("Modality attribution per defect type")) == 2 * 4  # 3 defect types + good
    assert parts["Where the image maxima sit (border check)"].count("validation image maxima") == 2


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
