"""``trd monitor``: the drift and input-health checks over scored records, for cron and CI.

The records (`trd.runtime.records`, schema ``trd.record/1``) are replayed in the order they were
scored through `trd.runtime.monitor.Monitor`; the answer is the checks on the last window (whether
the line is drifting *now*) and, for each check, the record at which it first raised its alarm.
Records carry what the checks compare with (the threshold's rank, the p-value against the
validation scores, the training scans' input-health spread), so no model file is needed: the
records of a line PC can be checked anywhere.

Where the records come from is one function, :func:`read_records`: a ``predictions.jsonl``, a
``trd predict`` output folder holding one, or a result store (`trd.store`: a SQLite file or a
database URL), whose records of one model are replayed oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..runtime.monitor import CHECKS, Monitor, MonitorSettings
from .predict import PREDICTIONS

Log = Callable[[str], None]


class Skipped:
    """Lines of a record file that are not records (counted, with the first one's line number)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None

    def add(self, line_number: int) -> None:
        self.count += 1
        self.first = self.first or line_number


def _jsonl(path: Path, skipped: Skipped) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a ``predictions.jsonl``; a last line without its newline is one being
    written (left out, not counted); other lines that are not records are counted in ``skipped``."""
    try:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    return
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and isinstance(record.get("anomalous"), bool):
                    yield number, record
                elif line.strip():
                    skipped.add(number)
    except OSError as exc:
        raise DataError(path, f"cannot read it: {exc.strerror or exc}") from None


def is_store(source: str) -> bool:
    """Whether ``source`` names a result store: a database URL, or a SQLite file."""
    if "://" in source:
        return True
    path = Path(source)
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _stored(target: str, model: str | None, log: Log) -> Iterator[tuple[int, dict[str, Any]]]:
    """(id, record) of the store's records of ``model`` (its sha256 or a prefix of 8+ hex digits;
    default: the model of the newest record), oldest first."""
    from ..store import Retention, open_store

    store = open_store(target, None, Retention(), log)  # no retention pass: the monitor only reads
    try:
        if model is None:
            newest = store.query(limit=1)
            if not newest:
                raise DataError(target, "the result store holds no results yet")
            model = newest[0].model_sha256
        for stored in store.iterate(model=model):
            yield stored.id, stored.record
    finally:
        store.close()


def read_records(source: str | Path, skipped: Skipped, model: str | None = None,
                 log: Log = print) -> Iterator[tuple[int, dict[str, Any]]]:
    """(place, record) of the scored records of ``source`` in scoring order: a ``predictions.jsonl``
    (place: the line number), a folder that holds one (``trd predict --out``), or a result store
    (place: the record's id; the records of ``model``, default the newest record's model)."""
    if is_store(str(source)):
        yield from _stored(str(source), model, log)
        return
    source = Path(source)
    path = source / PREDICTIONS if source.is_dir() else source
    if not path.is_file():
        where = f"no {PREDICTIONS} in this folder" if source.is_dir() else "file not found"
        raise DataError(source, f"{where}; give a predictions.jsonl or a `trd predict --out` folder")
    yield from _jsonl(path, skipped)


def monitor(source: str | Path, settings: MonitorSettings | None = None, model: str | None = None,
            log: Log = print) -> dict[str, Any]:
    """Replay the records of ``source`` through the drift monitor.

    Args:
        source: a ``predictions.jsonl``, a folder holding one, or a result store (a SQLite file or
            a database URL).
        settings: window and false-alarm level (default `MonitorSettings()`).
        model: for a store: the model whose records are replayed (sha256 or its first 8+ hex
            digits; default: the model of the newest record).
        log: receives a note on lines that are not records.

    Returns:
        ``{"source", "records", "window", "alpha", "alarm", "scans", "seen", "model", "checks": [{"name",
        "state", "p", "reason"}, ...], "first_alarm": {check: {"record", "name"}}, "raised": {check: n},
        "skipped_lines"}``: the checks on the last window (``alarm``: any of them in alarm now) and
        where each check first raised its alarm (record number, 1-based, and its sample name).

    Example:
        >>> from trd import api
        >>> api.monitor("preds/")["alarm"]  # doctest: +SKIP
        False
    """
    source, settings = str(source), settings or MonitorSettings()
    skipped = Skipped()
    watch = Monitor(settings)
    names: dict[int, str] = {}
    for place, record in read_records(source, skipped, model, log):
        try:
            watch.add(record)
        except ValueError:
            skipped.add(place)
            continue
        if watch.seen in watch.first_alarm.values():
            names[watch.seen] = str(record.get("name", ""))
    if skipped.count:
        log(f"monitor: skipped {skipped.count} line(s) of {source} that are not trd records (the first: line "
            f"{skipped.first})")
    if watch.seen == 0 and skipped.count:
        raise DataError(source, "holds no trd records (not a predictions.jsonl?)")
    first = {check: {"record": at, "name": names[at]} for check, at in watch.first_alarm.items()}
    return {"source": str(source), "records": watch.seen, "window": settings.window, "alpha": settings.alpha,
            **watch.status.to_dict(), "first_alarm": first, "raised": dict(watch.raised),
            "skipped_lines": skipped.count}


def report_lines(summary: dict[str, Any]) -> list[str]:
    """The summary in words: one line per check, the alarms first raised where."""
    lines = [f"monitor: {summary['records']} records of {summary['source']}; the checks on the last "
             f"{summary['scans']} (window {summary['window']}, false-alarm level {summary['alpha']:g} per check)"]
    for check in summary["checks"]:
        first = summary["first_alarm"].get(check["name"])
        since = f" (first raised at record {first['record']}, {first['name']})" if first else ""
        lines.append(f"{check['state'].upper():8s} {check['reason']}{since if check['state'] == 'alarm' else ''}")
    earlier = [f"{CHECKS[name]} at record {at['record']} ({at['name']})" for name, at in summary["first_alarm"].items()
               if not any(c["name"] == name and c["state"] == "alarm" for c in summary["checks"])]
    if earlier:
        lines.append(f"earlier alarms, now cleared: {'; '.join(earlier)}")
    lines.append("ALARM: the line is drifting (exit code 1)" if summary["alarm"] else "no alarm")
    return lines
