"""Published numbers (method.md §7.1) and the reproduction table against them."""

from __future__ import annotations

import pytest

from trd.reporting.paper import (
    CATEGORIES,
    COMPARISONS,
    METRIC_KEYS,
    PUBLISHED,
    format_reproduction_table,
    published_trd,
)


def _row(table: str, first_cell: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{table}")


def test_published_rows_are_complete_and_consistent() -> None:
    assert set(PUBLISHED) == set(METRIC_KEYS)
    names = {row.method for row in PUBLISHED["i_auroc"]}
    assert names == {"BTF", "M3DM", "Shape-guided", "AST", "MMRD", "CFM", "3D-ADNAS", "TRD"}
    for metric, rows in PUBLISHED.items():
        for row in rows:
            assert len(row.values) in (0, len(CATEGORIES)), (metric, row.name)
            if row.values:  # the published mean is the rounded mean of the rounded values
                assert abs(sum(row.values) / len(row.values) - row.mean) <= 0.06, (metric, row.name)


def test_published_spot_values() -> None:
    assert published_trd("i_auroc", "normals").by_category()["bagel"] == 98.9
    assert published_trd("i_auroc", "depth").by_category()["tire"] == 83.3
    assert published_trd("p_auroc", "normals").mean == 99.6
    assert published_trd("aupro@0.3", "depth").by_category()["foam"] == 90.2
    ast = {r.method: r for r in PUBLISHED["p_auroc"]}["AST"]
    assert ast.by_category() == {} and ast.mean == 97.6


def test_full_table_layout_and_differences() -> None:
    ours = {c: {"i_auroc": 0.95} for c in CATEGORIES}
    table = format_reproduction_table(ours, "i_auroc", "normals")
    header = _row(table, "method")
    assert header[2:] == [*CATEGORIES, "mean"]
    assert _row(table, "ours")[2:] == ["95.0"] * 10 + ["95.0"]
    published = _row(table, "TRD (published)")
    assert published[1] == "RGB+Normal" and published[2] == "98.9" and published[-1] == "98.4"
    diff = _row(table, "difference")
    assert diff[2] == "-3.9" and diff[-1] == "-3.4"
    assert not any(c.endswith("*") for c in _row(table, "ours") + _row(table, "difference"))
    assert "categories present" not in table


def test_partial_set_mean_is_over_present_categories_and_marked() -> None:
    ours = {"bagel": {"aupro@0.3": 0.96}, "rope": {"aupro@0.3": 0.98}, "carrot": {"aupro@0.3": 0.97},
            "tire": {"aupro@0.3": float("nan")}, "not_mvtec": {"aupro@0.3": 0.5}, "cookie": {"i_auroc": 0.9}}
    table = format_reproduction_table(ours, "aupro@0.3", "depth")
    mine = _row(table, "ours")
    assert mine[1] == "RGB+Depth"
    assert mine[2] == "96.0" and mine[2 + CATEGORIES.index("rope")] == "98.0"
    assert mine[2 + CATEGORIES.index("tire")] == "–" and mine[2 + CATEGORIES.index("cookie")] == "–"
    assert mine[-1] == "97.0*"
    # published Depth AUPRO: bagel 97.5, carrot 98.1, rope 97.6 -> 97.73 over the same categories
    assert _row(table, "difference")[-1] == "-0.7*"
    assert _row(table, "TRD (published)")[-1] == "96.9"
    assert "3 of 10 categories" in table and "(bagel, carrot, rope)" in table and "97.73" in table


@pytest.mark.parametrize(
    ("ours", "metric", "modality", "match"),
    [
        ({"bagel": {"i_auroc": 0.9}}, "f1", "normals", "unknown metric"),
        ({"bagel": {"i_auroc": 0.9}}, "i_auroc", "pointcloud", "unknown 3D modality"),
        ({"bagel": {"i_auroc": 98.0}}, "i_auroc", "normals", "fraction"),
        ({"candy": {"i_auroc": 0.9}}, "i_auroc", "normals", "no MVTec 3D-AD category"),
    ],
)
def test_invalid_requests_raise(ours: dict, metric: str, modality: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        format_reproduction_table(ours, metric, modality)


def test_aupro_is_compared_on_the_published_curve_and_the_table_says_which() -> None:
    """The published AU-PRO comes from the 100-threshold script: compared with aupro100, exact shown beside."""
    comparison = {c.published: c for c in COMPARISONS}["aupro@0.3"]
    assert comparison.ours == "aupro100@0.3"
    ours = {c: {"aupro100@0.3": 0.96, "aupro@0.3": 0.90} for c in CATEGORIES}
    table = format_reproduction_table(ours, "aupro@0.3", "normals", comparison)
    assert _row(table, "ours (100-threshold curve)")[2:] == ["96.0"] * 11
    assert _row(table, "difference")[2] == "-1.5"  # 96.0 - 97.5 (bagel), the same curve
    assert _row(table, "ours (exact curve)")[2:] == ["90.0"] * 11  # information, no difference row
    assert "100-threshold curve (`aupro100@0.3`)" in table and "exact" in table
    # I-AUROC / P-AUROC compare the same key.
    assert [(c.published, c.ours) for c in COMPARISONS[:2]] == [("i_auroc", "i_auroc"), ("p_auroc", "p_auroc")]
    with pytest.raises(ValueError, match="comparison for"):
        format_reproduction_table(ours, "i_auroc", "normals", comparison)
