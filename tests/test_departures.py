"""Every departure from the reference listed in docs/METHOD_NOTES.md is marked in the code, and
every ``DEPARTURE`` mark in the code names a listed departure (docs/METHOD_NOTES.md, first lines)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A numbered departure: "1. **...", "10b. **..." at the start of a line of the Departures section.
_ITEM = re.compile(r"^(\d+[a-z]?)\. \*\*", re.MULTILINE)
_REF = re.compile(r"DEPARTURE \(docs/METHOD_NOTES\.md §(\d+[a-z]?)[;,)]")


def _listed() -> set[str]:
    text = (ROOT / "docs" / "METHOD_NOTES.md").read_text(encoding="utf-8")
    section = text.split("## Departures", 1)[1].split("\n## ", 1)[0]
    return set(_ITEM.findall(section))


def _marks() -> dict[str, list[str]]:
    """{departure number: [file:line, ...]}; raises on a mark without a number."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"DEPARTURE", text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(ROOT)}:{line}"
            ref = _REF.match(text, match.start())
            assert ref, f"{where}: a DEPARTURE mark must read 'DEPARTURE (docs/METHOD_NOTES.md §N...)'"
            found.setdefault(ref.group(1), []).append(where)
    return found


def test_every_listed_departure_is_marked_in_the_code() -> None:
    listed, marks = _listed(), _marks()
    assert len(listed) >= 12, listed
    missing = sorted(listed - set(marks), key=lambda n: (int(re.sub(r"\D", "", n)), n))
    assert not missing, f"departures listed in docs/METHOD_NOTES.md without a DEPARTURE mark in src/: {missing}"


def test_every_mark_names_a_listed_departure() -> None:
    listed, marks = _listed(), _marks()
    unknown = {n: where for n, where in marks.items() if n not in listed}
    assert not unknown, f"DEPARTURE marks naming no departure of docs/METHOD_NOTES.md: {unknown}"
