"""Run outputs for people and tools: metrics.json/.csv, report.md and a self-contained report.html.

The metric tables are built generically from whatever nested dict the evaluation returns (top-level
groups of scalars become key/value tables, groups of dicts become one row per key), so this module
does not depend on the exact metric names. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..atomic import atomic_write_text

#: Top-level result groups whose keys name a scope ("per_defect" -> "defect:<type>").
SCOPE_PREFIXES = {"per_defect": "defect", "per_branch": "branch", "per_category": "category"}
#: Section titles of known groups, in report order; other groups follow under their own name.
SECTION_TITLES = {
    "overall": "Overall",
    "per_category": "Per category",
    "per_defect": "Per defect type",
    "per_branch": "Per branch",
    "counts": "Counts",
}
CSV_HEADER = ("scope", "name", "metric", "value")


@dataclass(frozen=True)
class SampleRow:
    """One test sample in the HTML report (``panel``: PNG path relative to the run folder)."""

    name: str
    category: str
    defect: str
    label: int
    score: float
    decision: bool | None = None
    contributions: dict[str, float] = field(default_factory=dict)
    panel: str | None = None


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar / 0-d array
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, scalar) for every leaf of a nested dict/list (list items keyed by index)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield path, value


def metric_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, Any]]:
    """Flatten a result dict into (scope, name, metric, value) rows.

    scope: "<prefix>:<key>" for groups in SCOPE_PREFIXES, else the top-level key ("overall", ...;
    "" for a top-level scalar); metric: the leaf key; name: the keys in between joined with "/".
    """
    rows = []
    for path, value in _leaves(_clean(result)):
        head, rest = path[0], list(path[1:])
        if not rest:  # a scalar at the top level
            scope, rest = "", [head]
        elif head in SCOPE_PREFIXES and len(rest) > 1:
            scope = f"{SCOPE_PREFIXES[head]}:{rest.pop(0)}"
        else:
            scope = head
        metric = rest.pop()
        rows.append((scope, "/".join(rest), metric, value))
    return rows


def write_metrics(run_dir: str | Path, result: Mapping[str, Any]) -> None:
    """Write ``metrics.json`` (the nested dict, NaN -> null) and ``metrics.csv`` (flattened)."""
    run_dir = Path(run_dir)
    text = json.dumps(_clean(result), indent=2, allow_nan=False, default=str)
    atomic_write_text(run_dir / "metrics.json", text + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for scope, name, metric, value in metric_rows(result):
        writer.writerow((scope, name, metric, "" if value is None else value))
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def _fmt(value: Any) -> str:
    """Table cell text: floats with 4 decimals, missing/NaN as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _tables(result: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(section title, header, rows) for each top-level group of the result."""
    clean = _clean(result)
    order = [k for k in SECTION_TITLES if k in clean] + [k for k in clean if k not in SECTION_TITLES]
    tables = []
    for key in order:
        group = clean[key]
        title = SECTION_TITLES.get(key, key)
        if isinstance(group, Mapping) and group and all(isinstance(v, Mapping) for v in group.values()):
            flat = {row: {"/".join(p): v for p, v in _leaves(sub)} for row, sub in group.items()}
            cols = list(dict.fromkeys(c for sub in flat.values() for c in sub))
            rows = [[row] + [_fmt(sub.get(c)) for c in cols] for row, sub in flat.items()]
            tables.append((title, [SCOPE_PREFIXES.get(key, "name"), *cols], rows))
        else:
            rows = [["/".join(p) or key, _fmt(v)] for p, v in _leaves(group)]
            tables.append((title, ["metric", "value"], rows))
    return tables


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(title: str, result: Mapping[str, Any], config: Mapping[str, Any] | None, notes: list[str]) -> str:
    out = [f"# {title}", ""]
    out += [f"- {note}" for note in notes] + ([""] if notes else [])
    for section, header, rows in _tables(result):
        out += [f"## {section}", ""]
        out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
        out.append("")
    if config is not None:
        out += ["## Configuration", "", "```json", json.dumps(_clean(config), indent=2, default=str), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:middle}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.anomalous td:first-child{border-left:4px solid #c33}
.bar{display:flex;align-items:center;gap:4px;font-size:0.8em;white-space:nowrap}
.bar span.fill{display:inline-block;height:8px;background:#4a7bd0}
pre{background:#f6f6f6;padding:0.8em;overflow:auto}
img.panel{max-width:900px;width:100%}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i else f"<td>{escape(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>\n"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _contribution_bars(contributions: Mapping[str, float]) -> str:
    """Each branch's share of the positive total, as a small bar and a percentage."""
    positive = {k: max(float(v), 0.0) if math.isfinite(float(v)) else 0.0 for k, v in contributions.items()}
    total = sum(positive.values())
    parts = []
    for name, value in contributions.items():
        share = 100.0 * positive[name] / total if total > 0 else 0.0
        parts.append(
            f'<div class="bar" title="{escape(f"{name}: {value}")}"><span>{escape(name)}</span>'
            f'<span class="fill" style="width:{share * 0.6:.1f}px"></span><span>{share:.0f}%</span></div>'
        )
    return "".join(parts)


def _sample_rows_html(rows: list[SampleRow]) -> str:
    def key(r: SampleRow) -> tuple[bool, float]:
        score = float(r.score)
        return (not math.isfinite(score), -score if math.isfinite(score) else 0.0)

    header = ["#", "sample", "category", "defect", "label", "score", "decision", "contributions", "panel"]
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for rank, r in enumerate(sorted(rows, key=key), start=1):
        decision = "–" if r.decision is None else ("anomalous" if r.decision else "normal")
        panel = (
            f'<img class="panel" loading="lazy" src="{escape(quote(r.panel))}" alt="{escape(r.name)}">'
            if r.panel else "–"
        )
        cls = ' class="anomalous"' if r.label else ""
        out.append(
            f"<tr{cls}><td class=\"num\">{rank}</td><td>{escape(r.name)}</td><td>{escape(r.category)}</td>"
            f"<td>{escape(r.defect)}</td><td class=\"num\">{int(r.label)}</td>"
            f"<td class=\"num\">{escape(_fmt(float(r.score)))}</td><td>{decision}</td>"
            f"<td>{_contribution_bars(r.contributions)}</td><td>{panel}</td></tr>"
        )
    out += ["</tbody>", "</table>"]
    return "\n".join(out) + "\n"


def _html(title: str, result: Mapping[str, Any], rows: list[SampleRow],
          config: Mapping[str, Any] | None, notes: list[str]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if notes:
        out.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    for section, header, table_rows in _tables(result):
        out.append(f"<h2>{escape(section)}</h2>")
        out.append(_html_table(header, table_rows))
    out.append(f"<h2>Test samples ({len(rows)}, by score, highest first)</h2>")
    out.append(_sample_rows_html(rows))
    if config is not None:
        out.append("<h2>Configuration</h2>")
        out.append(f"<pre>{escape(json.dumps(_clean(config), indent=2, default=str))}</pre>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    result: Mapping[str, Any],
    rows: list[SampleRow],
    config: Mapping[str, Any] | None,
    notes: list[str],
) -> Path:
    """Write ``report.md`` (metric tables + config) and ``report.html`` (same + all samples).

    The HTML page is self-contained (inline CSS, no scripts or remote resources); sample panels are
    referenced by their relative paths, so the run folder can be moved or archived as a whole.
    Returns the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "report.md", _markdown(title, result, config, notes))
    html_path = run_dir / "report.html"
    atomic_write_text(html_path, _html(title, result, rows, config, notes))
    return html_path
