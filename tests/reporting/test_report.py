"""metrics.json/.csv and the Markdown/HTML reports."""

from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from trd.reporting.figures import Picture, save_heatmap_png
from trd.reporting.labels import WORDS, outcome, section, term
from trd.reporting.report import SampleRow, metric_rows, write_metrics, write_report
from trd.reporting.sections import Section, Table

RESULT = {
    "overall": {"i_auroc": 0.9731, "p_auroc": np.float64(0.991), "aupro@0.3": 0.95, "i_ap": float("nan")},
    "per_defect": {
        "crack": {"i_auroc": 0.99, "p_auroc": 0.98},
        "hole <&>": {"i_auroc": 1.0, "p_auroc": float("inf")},
    },
    "per_branch": {"rgb": {"i_auroc": 0.9}, "geo": {"i_auroc": 0.8, "aupro": {"0.3": 0.7, "0.01": 0.2}}},
    "counts": {"images": 12, "defective": np.int64(6), "aupro_impl": "head-100"},
    "category": "bagel",
}
N_LEAVES = 4 + 4 + 4 + 3 + 1

VOID = {"meta", "img", "br", "hr", "input", "link"}


class _Checker(HTMLParser):
    """Checks that tags nest properly and collects img srcs, texts and hrefs."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs)["src"] or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unexpected </{tag}> at {self.getpos()}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, checker.stack
    return checker


def test_metric_rows_flatten_generically() -> None:
    rows = metric_rows(RESULT)
    assert len(rows) == N_LEAVES
    assert ("overall", "", "i_auroc", 0.9731) in rows
    assert ("overall", "", "i_ap", None) in rows
    assert ("defect:hole <&>", "", "p_auroc", None) in rows
    assert ("branch:geo", "aupro", "0.3", 0.7) in rows
    assert ("counts", "", "defective", 6) in rows
    assert ("", "", "category", "bagel") in rows


def test_write_metrics_json_and_csv(tmp_path: Path) -> None:
    write_metrics(tmp_path, RESULT)
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["overall"]["i_ap"] is None and data["per_defect"]["hole <&>"]["p_auroc"] is None
    assert data["overall"]["p_auroc"] == 0.991 and data["counts"]["defective"] == 6
    assert data["per_branch"]["geo"]["aupro"]["0.01"] == 0.2
    with (tmp_path / "metrics.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["scope", "name", "metric", "value"]
    assert len(rows) == 1 + N_LEAVES
    assert ["defect:crack", "", "i_auroc", "0.99"] in rows and ["overall", "", "i_ap", ""] in rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.json"]


def _rows(tmp_path: Path) -> list[SampleRow]:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    out = []
    scores = [0.4, 3.5, float("nan"), 2.0, 1.1]
    for i, score in enumerate(scores):
        pictures = []
        if i != 3:
            path = f"samples/{'crack' if i % 2 else 'good'}/{i:03d} <x> é/heatmap.png"
            save_heatmap_png(tmp_path / path, rgb, np.full((8, 8), score), 0.0, 4.0)
            pictures = [Picture(path, "Anomaly heatmap <b>", (0.0, 4.0, 1.5))]
        out.append(SampleRow(
            name=f"bagel/test/{i:03d}<script>.png", category="bagel", defect="crack" if i % 2 else "good",
            label=i % 2, score=score, decision=None if i == 4 else bool(score > 1.0) and i != 3,  # 3: missed
            branch_shares={"rgb": 0.7, "geo": 0.3} if i else {"rgb": -1.0, "geo": float("nan")}, pictures=pictures,
            attribution={"colour": 1.5, "geometry": -0.2} if i == 1 else None,
            regions=["Region 1: 3.2 mm², 0.41 mm deep, centre x 1, y 2, z 400 mm"] if i == 1 else [],
            reason="image score 3.5000 is above the threshold 1.0000: anomalous" if i == 1 else "",
        ))
    return out


def test_write_report_html_and_markdown(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    config = {"data": {"category": "bagel", "root": Path("/data/mvtec 3d")}, "score": {"sigma": 4.0},
              "model": {"weights": "imagenet"}}
    section = Section("At a glance", intro="first things", warnings=["too few <samples>"], paragraphs=["p1"],
                      tables=[Table(["decision", "rate"], [["flagged", "10 %"]], {"rate": "the realised rate"})])
    html_path = write_report(
        tmp_path, title="TRD <bagel> & co", result=RESULT, rows=rows, config=config,
        notes=["AU-PRO: HEAD 100-threshold variant", "x < y"], sections=[section],
    )
    assert html_path == tmp_path / "report.html"
    html = html_path.read_text(encoding="utf-8")
    checker = _parse(html)
    text = "".join(checker.text)
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html
    assert "TRD <bagel> & co" in text and "x < y" in text and "hole <&>" in text
    for row in rows:  # every sample listed
        assert row.name in text
    assert html.count("<tr") == 1 + 1 + _metric_table_rows()  # the section's table, then the metric tables
    assert html.count('class="sample') == len(rows)
    assert len(checker.srcs) == 4 and html.count("<figcaption>") == 4
    for src in checker.srcs:
        assert (tmp_path / unquote(src)).is_file()
    order = [text.index(f"{i:03d}<script>") for i in (1, 3, 4, 0, 2)]  # by score, NaN last
    assert order == sorted(order)
    assert "70%" in text and "30%" in text and "/data/mvtec 3d" in text
    assert "parts of the score" in text and "colour student" in text and "mainly colour" in text
    for jargon in ("branch shares", "blurred z-value", "Clopper-Pearson", "(label 0)", "contributions"):
        assert jargon not in text, jargon
    # plain words for each sample's result, with the words explained in the glossary
    assert [outcome(r.label, r.decision) for r in rows] == ["good, passed", "defect found", "good, passed",
                                                              "missed defect", "not decided"]
    assert outcome(0, True) == "false alarm"
    assert "false alarm" in WORDS and "missed defect" in text and "a good part (no defect)" in text
    assert "Words used in this report" in text and WORDS["missed defect"] in text
    assert "Region 1: 3.2 mm², 0.41 mm deep" in text and "Why: image score 3.5000 is above" in text
    assert html.count('<div class="scale"') == 4 and "flagged above 1.5" in text  # a colour bar under each heatmap
    assert "Anomaly heatmap <b>" in text  # captions are HTML text, escaped
    # human headings, definitions one hover / one click away; the section comes before the metrics
    assert "All test images" in text and "Each branch alone" in text and "AU-PRO (FPR <= 30 %)" in text
    assert "aupro@0.3" not in text and "i_auroc" not in text
    assert 'title="Image-level area under the ROC curve' in html and "<details>" in html
    assert text.index("At a glance") < text.index("All test images") and "too few <samples>" in text
    assert 'class="banner"' not in html  # ImageNet teachers: no banner

    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# TRD <bagel> & co")
    assert "## All test images" in md and "## Per defect type" in md and "## Each branch alone" in md
    assert "| I-AUROC | 0.9731 |" in md and "| I-AP | – |" in md
    assert "| defect type | I-AUROC | P-AUROC |" in md and "| crack | 0.9900 | 0.9800 |" in md
    assert "| geo (geometry branch) | 0.8000 | 0.7000 | 0.2000 |" in md  # nested metrics become columns
    assert "> **Warning:** too few <samples>" in md and "## Definitions" in md and "## Words used in this report" in md
    assert "- **I-AUROC**: Image-level area under the ROC curve" in md
    assert '"sigma": 4.0' in md and "/data/mvtec 3d" in md
    assert not list(tmp_path.glob(".*.tmp"))


def test_banner_when_teachers_are_not_imagenet(tmp_path: Path) -> None:
    for weights, words in (("none", "Random teachers"), ("/w/resnet18.pth", "/w/resnet18.pth")):
        write_report(tmp_path, title="t", result={"overall": {"i_auroc": 0.5}}, rows=[],
                     config={"model": {"weights": weights}}, notes=[])
        html = (tmp_path / "report.html").read_text(encoding="utf-8")
        md = (tmp_path / "report.md").read_text(encoding="utf-8")
        banner = html[html.index('<div class="banner">'):]
        assert words in banner[:400] and html.index('class="banner"') < html.index("<h2>")
        assert md.splitlines()[2].startswith("> **WARNING: ") and words in md.splitlines()[2]


def test_headings_and_definitions() -> None:
    assert term("aupro@0.3")[0] == "AU-PRO (FPR <= 30 %)" and term("aupro100@0.01")[0] == "AU-PRO, 100 thresholds (FPR <= 1 %)"
    assert "30 %" in term("aupro@0.3")[1]
    assert term("i_auroc")[0] == "I-AUROC" and term("unknown_key") == ("unknown_key", "")
    assert section("branch_i_auroc_per_defect")[0] == "I-AUROC per defect type, each branch alone"


def _metric_table_rows() -> int:
    """<tr> count of the metric tables: header + rows per group of RESULT (top-level scalars get none)."""
    return (1 + 4) + (1 + 2) + (1 + 2) + (1 + 3)


def test_report_without_samples_or_config(tmp_path: Path) -> None:
    path = write_report(tmp_path, title="empty", result={"overall": {"i_auroc": math.nan}},
                        rows=[], config=None, notes=[])
    html = path.read_text(encoding="utf-8")
    _parse(html)
    assert "Test samples (0" in html and "Configuration" not in html
    assert "Configuration" not in (tmp_path / "report.md").read_text(encoding="utf-8")
