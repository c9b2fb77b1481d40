"""Run outputs for people and tools: metrics.json/.csv, report.md and a self-contained report.html.

The files for tools keep the raw keys of the result dict. The reports for people start with what a
reader needs first (a banner when the teachers were not ImageNet, the words the report uses, the
decisions at the deployment thresholds, the border check: `trd.reporting.sections`), then the metric
tables, built generically from the nested result (groups of scalars become key/value tables, groups
of dicts one row per key) with human headings and definitions (`trd.reporting.labels`): hover a
heading, or open "Definitions". Every test sample follows, labelled in plain words ("missed defect",
"false alarm"), with its pictures as separate images and HTML captions and a colour bar under each
heatmap. The HTML page needs no scripts and fits the window down to a phone's: wide tables scroll
inside their own box and pictures wrap. Every file is written atomically.
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
from ..evaluation.attribution import colour_share, main_modality
from .figures import BRANCH_LABELS, Picture
from .labels import WORDS, outcome
from .labels import section as section_label
from .labels import term
from .sections import Section, Table, teacher_banner

#: Top-level result groups whose keys name a scope ("per_defect" -> "defect:<type>").
SCOPE_PREFIXES = {"per_defect": "defect", "per_branch": "branch", "per_category": "category"}
#: Known groups in report order; other groups follow. Groups in RENDERED_ELSEWHERE are shown by sections.
SECTION_ORDER = ("overall", "per_category", "per_defect", "per_branch", "branch_i_auroc_per_defect",
                 "modality_attribution", "counts")
RENDERED_ELSEWHERE = frozenset({"operating_point", "border_check", "thresholds"})
#: Heading of the first column of groups whose rows are keyed.
ROW_KIND = {"per_defect": "defect type", "per_branch": "branch", "per_category": "category",
            "branch_i_auroc_per_defect": "branch", "modality_attribution": "defect type"}
CSV_HEADER = ("scope", "name", "metric", "value")


@dataclass(frozen=True)
class SampleRow:
    """One test sample in the HTML report.

    ``decision``: flagged or not (None: not decided); ``reason``: why, in words;
    ``branch_shares``: each branch's part of the score (by branch name); ``pictures``: its images
    (paths relative to the run folder); ``regions``: one line per flagged region (size, depth,
    place); ``attribution``: the modality attribution's score drops (``{"colour": .., "geometry": ..}``)
    when it was measured.
    """

    name: str
    category: str
    defect: str
    label: int
    score: float
    decision: bool | None = None
    branch_shares: dict[str, float] = field(default_factory=dict)
    pictures: list[Picture] = field(default_factory=list)
    attribution: dict[str, float] | None = None
    regions: list[str] = field(default_factory=list)
    reason: str = ""


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


def _heading(path: tuple[str, ...]) -> str:
    """Column or row heading of a key path (nested keys joined with " / ")."""
    return " / ".join(term(p)[0] for p in path)


def _metric_sections(result: Mapping[str, Any]) -> list[Section]:
    """One section per top-level group of the result (scalars at the top level are left to the notes)."""
    clean = _clean(result)
    order = [k for k in SECTION_ORDER if k in clean] + [k for k in clean if k not in SECTION_ORDER]
    out = []
    for key in order:
        group = clean[key]
        if key in RENDERED_ELSEWHERE or not isinstance(group, Mapping) or not group:
            continue
        title, intro = section_label(key)
        if all(isinstance(v, Mapping) for v in group.values()):
            flat = {row: {p: v for p, v in _leaves(sub)} for row, sub in group.items()}
            cols = list(dict.fromkeys(c for sub in flat.values() for c in sub))
            rows = [[term(row)[0]] + [_fmt(sub.get(c)) for c in cols] for row, sub in flat.items()]
            header = [ROW_KIND.get(key, "name"), *(_heading(c) for c in cols)]
            helps = {_heading(c): term(c[-1])[1] for c in cols} | {term(r)[0]: term(r)[1] for r in group}
        else:
            rows = [[_heading(p), _fmt(v)] for p, v in _leaves(group)]
            header = ["metric", "value"]
            helps = {_heading(p): term(p[-1])[1] for p, _ in _leaves(group)}
        out.append(Section(title, intro=intro, tables=[Table(header, rows, {k: v for k, v in helps.items() if v})]))
    return out


def _glossary(sections: list[Section]) -> dict[str, str]:
    """Every defined heading used in the report's tables, with its definition."""
    terms: dict[str, str] = {}
    for sec in sections:
        for table in sec.tables:
            terms.update(table.help)
    return terms


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_section(sec: Section) -> list[str]:
    out = [f"## {sec.title}", ""]
    out += [sec.intro, ""] if sec.intro else []
    out += [f"> **Warning:** {w}" for w in sec.warnings] + ([""] if sec.warnings else [])
    out += [f"- {p}" for p in sec.paragraphs] + ([""] if sec.paragraphs else [])
    for table in sec.tables:
        out.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
        out.append("|" + "---|" * len(table.header))
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        out.append("")
    return out


def _markdown(title: str, banner: str | None, sections: list[Section], config: Mapping[str, Any] | None,
              notes: list[str]) -> str:
    out = [f"# {title}", ""]
    out += [f"> **WARNING: {banner}**", ""] if banner else []
    out += [f"- {note}" for note in notes] + ([""] if notes else [])
    out += ["## Words used in this report", ""] + [f"- **{k}**: {v}" for k, v in WORDS.items()] + [""]
    for sec in sections:
        out += _md_section(sec)
    glossary = _glossary(sections)
    if glossary:
        out += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in glossary.items()] + [""]
    if config is not None:
        out += ["## Configuration", "", "```json", json.dumps(_clean(config), indent=2, default=str), "```", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0.5em 1.5em 2em;max-width:1200px;color:#222;line-height:1.4}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.banner{background:#fde2e1;border:2px solid #c33;padding:0.8em 1em;font-weight:600;margin:1em 0}
.warn{background:#fff4d6;border-left:4px solid #e0a000;padding:0.5em 0.8em;margin:0.5em 0}
.intro{color:#555}
.tablewrap{overflow-x:auto;max-width:100%;margin:0.5em 0 1.2em}
table{border-collapse:collapse}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
th[title],dfn[title]{cursor:help;text-decoration:underline dotted}
td.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin:0.5em 0}
summary{cursor:pointer;font-weight:600}
dt{font-weight:600}
dd{margin:0 0 0.5em 1.5em}
.sample{border:1px solid #ddd;border-radius:4px;padding:0.5em 0.7em;margin:0 0 1em;overflow-wrap:anywhere}
.sample.defective{border-left:5px solid #c33}
.sample h3{font-size:1.05em;margin:0.2em 0 0.4em}
.meta{display:flex;flex-wrap:wrap;gap:0.3em 1.2em;align-items:center;margin-bottom:0.3em}
.outcome{font-weight:700;padding:1px 6px;border-radius:4px;background:#e7f3ea;color:#1a6b35}
.outcome.false-alarm,.outcome.missed-defect{background:#fde2e1;color:#a00}
.outcome.defect-found{background:#fff4d6;color:#7a5200}
.bar{display:inline-flex;align-items:center;gap:4px;font-size:0.85em;white-space:nowrap}
.bar span.fill{display:inline-block;height:8px;background:#4a7bd0}
.pics{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,170px),1fr));gap:10px;margin:0.4em 0}
.pics figure{margin:0;min-width:0}
.pics img{width:100%;height:auto;display:block;image-rendering:pixelated;border:1px solid #ccc}
.pics figcaption{font-size:0.85em;color:#444}
.scale{margin-top:3px;font-size:0.75em;color:#555}
.scale .ramp{position:relative;height:9px;border:1px solid #aaa;background:linear-gradient(to right,rgb(0 0 128) 0%,rgb(0 0 255) 12.5%,rgb(0 128 255) 25%,rgb(22 255 225) 37.5%,rgb(125 255 122) 50%,rgb(228 255 19) 62.5%,rgb(255 148 0) 75%,rgb(255 30 0) 87.5%,rgb(128 0 0) 100%)}
.scale .tick{position:absolute;top:-3px;bottom:-3px;width:3px;background:#fff;border:1px solid #000;transform:translateX(-50%)}
.scale .ends{display:flex;justify-content:space-between;gap:4px}
ol.regions{margin:0.2em 0;padding-left:1.5em}
pre{background:#f6f6f6;padding:0.8em;overflow:auto;white-space:pre-wrap;word-break:break-all}
"""


def _html_table(table: Table) -> str:
    def th(h: str) -> str:
        tip = table.help.get(h)
        return f'<th title="{escape(tip)}">{escape(h)}</th>' if tip else f"<th>{escape(h)}</th>"

    head = "".join(th(h) for h in table.header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i else f"<td>{escape(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>\n"
        for row in table.rows
    )
    return f'<div class="tablewrap"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table></div>\n'


def _html_section(sec: Section) -> str:
    out = [f"<h2>{escape(sec.title)}</h2>"]
    out += [f'<p class="intro">{escape(sec.intro)}</p>'] if sec.intro else []
    out += [f'<p class="warn"><b>Warning:</b> {escape(w)}</p>' for w in sec.warnings]
    out += ["<ul>" + "".join(f"<li>{escape(p)}</li>" for p in sec.paragraphs) + "</ul>"] if sec.paragraphs else []
    out += [_html_table(t) for t in sec.tables]
    return "\n".join(out)


def _share_bars(shares: Mapping[str, float]) -> str:
    """Each student's part of the positive total, as a small bar and a percentage."""
    positive = {k: max(float(v), 0.0) if math.isfinite(float(v)) else 0.0 for k, v in shares.items()}
    total = sum(positive.values())
    parts = []
    for name, value in shares.items():
        share = 100.0 * positive[name] / total if total > 0 else 0.0
        label = BRANCH_LABELS.get(name, f"{name} student")
        parts.append(
            f'<span class="bar" title="{escape(f"{label}: {value:+.3f} of the score")}">'
            f'<span>{escape(label)}</span><span class="fill" style="width:{share * 0.6:.1f}px"></span>'
            f"<span>{share:.0f}%</span></span>"
        )
    return " ".join(parts)


def _attribution_text(attribution: Mapping[str, float]) -> str:
    colour, geometry = float(attribution["colour"]), float(attribution["geometry"])
    main = main_modality(colour, geometry)
    share = colour_share(colour, geometry)
    split = "" if main == "neither" else f", colour {100 * share:.0f} % / shape {100 * (1 - share):.0f} %"
    words = {"colour": "colour", "geometry": "shape", "neither": "neither"}[main]
    return (f'<dfn title="How much the score drops when that input is replaced by good content around the peak">'
            f"which input caused it</dfn>: colour {colour:+.2f}, shape {geometry:+.2f} (mainly {words}{split})")


def _scale_bar(scale: tuple[float, float, float]) -> str:
    """The colour bar under a heatmap: its scale (which covers the sample's score) and the pixel threshold."""
    vmin, vmax, pixel = scale
    at = 100.0 * min(max((pixel - vmin) / (vmax - vmin), 0.0), 1.0) if vmax > vmin else 0.0
    return (f'<div class="scale" title="colour scale {vmin:.3g} (blue) to {vmax:.3g} (dark red); pixels above '
            f'{pixel:.3g} are flagged"><div class="ramp"><span class="tick" style="left:{at:.1f}%"></span></div>'
            f'<div class="ends"><span>{vmin:.3g}</span><span>flagged above {pixel:.3g}</span><span>{vmax:.3g}</span>'
            "</div></div>")


def _pictures(pictures: list[Picture]) -> str:
    if not pictures:
        return ""
    figures = "".join(
        f'<figure><img loading="lazy" src="{escape(quote(p.path))}" alt="{escape(p.caption)}">'
        f"<figcaption>{escape(p.caption)}</figcaption>{_scale_bar(p.scale) if p.scale else ''}</figure>"
        for p in pictures)
    return f'<div class="pics">{figures}</div>'


def _sample_cards(rows: list[SampleRow]) -> str:
    def key(r: SampleRow) -> tuple[bool, float]:
        score = float(r.score)
        return (not math.isfinite(score), -score if math.isfinite(score) else 0.0)

    out = []
    for rank, r in enumerate(sorted(rows, key=key), start=1):
        label = outcome(r.label, r.decision)
        what = f"defect type: {r.defect}" if r.label else "a good part (no defect)"
        meta = [f'<span class="outcome {label.replace(" ", "-").replace(",", "")}">{escape(label)}</span>',
                escape(what), f"category {escape(r.category)}", f"score {escape(_fmt(float(r.score)))}"]
        if r.branch_shares:
            meta.append('<dfn title="How much of the score came from each of the model\'s two students. Each also '
                        'sees the other input, so this does not say which input caused it.">parts of the score</dfn>: '
                        + _share_bars(r.branch_shares))
        if r.attribution is not None:
            meta.append(_attribution_text(r.attribution))
        reason = f"<p>Why: {escape(r.reason)}.</p>" if r.reason else ""
        regions = ("<ol class=\"regions\">" + "".join(f"<li>{escape(line)}</li>" for line in r.regions) + "</ol>"
                   if r.regions else "")
        cls = "sample defective" if r.label else "sample"
        out.append(f'<div class="{cls}"><h3>#{rank} {escape(r.name)}</h3><div class="meta">'
                   + "".join(f"<span>{m}</span>" for m in meta if m) + f"</div>{reason}{regions}"
                   + _pictures(r.pictures) + "</div>")
    return "\n".join(out) + "\n"


def _html(title: str, banner: str | None, sections: list[Section], rows: list[SampleRow],
          config: Mapping[str, Any] | None, notes: list[str]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if banner:
        out.append(f'<div class="banner">{escape(banner)}</div>')
    if notes:
        out.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    out.append("<details><summary>Words used in this report</summary><dl>"
               + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in WORDS.items()) + "</dl></details>")
    glossary = _glossary(sections)
    if glossary:
        out.append("<details><summary>Definitions of the headings (also shown when hovering a heading)</summary><dl>"
                   + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in glossary.items())
                   + "</dl></details>")
    out += [_html_section(sec) for sec in sections]
    out.append(f"<h2>Test samples ({len(rows)}, by score, highest first)</h2>")
    out.append(_sample_cards(rows))
    if config is not None:
        out.append("<h2>Configuration</h2>")
        out.append(f"<details><summary>Resolved settings</summary><pre>"
                   f"{escape(json.dumps(_clean(config), indent=2, default=str))}</pre></details>")
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
    sections: list[Section] = (),
) -> Path:
    """Write ``report.md`` (sections, metric tables, definitions, config) and ``report.html`` (the
    same + every sample).

    ``sections`` come first (e.g. `trd.reporting.sections.decisions_section`), then one section per
    metric group of ``result``. A banner heads both files when ``config`` names teachers other than
    ImageNet's. The HTML page is self-contained (inline CSS, no scripts or remote resources); sample
    pictures are referenced by their relative paths, so the run folder can be moved or archived as a
    whole. Returns the path of ``report.html``.
    """
    run_dir = Path(run_dir)
    banner = teacher_banner(config)
    everything = [*sections, *_metric_sections(result)]
    atomic_write_text(run_dir / "report.md", _markdown(title, banner, everything, config, notes))
    html_path = run_dir / "report.html"
    atomic_write_text(html_path, _html(title, banner, everything, rows, config, notes))
    return html_path
