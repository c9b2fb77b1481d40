"""Retention: the store is bounded by a count and/or an age of its unlabelled records, never by silent loss.

``--retain 10000`` keeps the newest 10,000 unlabelled records, ``--retain 90d`` those of the last 90
days, ``--retain 10000,90d`` both bounds, ``--retain none`` everything. Labelled records (false
alarms, confirmed defects, confirmed good scans) are never removed by retention: they are what an
operator reviewed, and what ``trd calibrate --store`` and ``trd store export-defects`` use. A removed
record's label history and files go with it; every pass that removes something writes a row in the
``retention`` table (when, the setting, how many, the oldest and newest time removed) and one log line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..errors import ConfigError
from . import files as store_files
from .schema import UTC, labels, records, retention

if TYPE_CHECKING:
    from .core import Store

DEFAULT = "10000"
#: Rows deleted per transaction: a writer of another process never waits long for the lock.
BATCH = 500


@dataclass(frozen=True)
class Retention:
    """Keep at most ``count`` unlabelled records and none older than ``days`` (None: no bound)."""

    count: int | None = None
    days: float | None = None

    def __str__(self) -> str:
        parts = ([f"newest {self.count} unlabelled"] if self.count is not None else []) + \
                ([f"unlabelled of the last {self.days:g} days"] if self.days is not None else [])
        return " and ".join(parts) or "everything"


def parse_retention(text: str) -> Retention:
    """``"10000"``, ``"90d"``, ``"10000,90d"`` or ``"none"``; ConfigError naming --retain otherwise."""
    text = text.strip().lower()
    if text == "none":
        return Retention()
    count = days = None
    for part in filter(None, (p.strip() for p in text.split(","))):
        if re.fullmatch(r"\d+", part) and count is None:
            count = int(part)
        elif re.fullmatch(r"\d+(\.\d+)?d", part) and days is None:
            days = float(part[:-1])
        else:
            raise ConfigError(f"--retain {text!r}: expected a count (10000), an age in days (90d), both (10000,90d) "
                              "or none")
    if count == 0 or days == 0:
        raise ConfigError(f"--retain {text!r}: a bound of 0 would remove every unlabelled record; use none to keep all")
    if count is None and days is None:
        raise ConfigError("--retain is empty: expected a count, an age in days (90d), both, or none")
    return Retention(count, days)


def prune(store: Store, policy: Retention, now: dt.datetime | None = None) -> int:
    """Remove the unlabelled records beyond ``policy`` with their label history and files; how many."""
    if policy.count is None and policy.days is None:
        return 0
    unlabelled = records.c.label.is_(None)
    chosen = []
    with store.transaction(write=False) as conn:
        if policy.days is not None:
            cutoff = (now or dt.datetime.now(UTC)) - dt.timedelta(days=policy.days)
            chosen += conn.execute(sa.select(records.c.id).where(unlabelled, records.c.created_at < cutoff)).scalars()
        if policy.count is not None:
            chosen += conn.execute(sa.select(records.c.id).where(unlabelled).order_by(records.c.id.desc())
                                   .offset(policy.count)).scalars()
    victims = sorted(set(chosen))
    removed: list[tuple[int, dt.datetime, str | None]] = []
    for start in range(0, len(victims), BATCH):
        ids = victims[start:start + BATCH]
        with store.transaction() as conn:  # labelled meanwhile: kept (the label check is in the DELETE)
            gone = conn.execute(records.delete().where(records.c.id.in_(ids), unlabelled)
                                .returning(records.c.id, records.c.created_at, records.c.files)).all()
            conn.execute(labels.delete().where(labels.c.record_id.in_([g[0] for g in gone])))
        for _, _, folder in gone:  # after the commit: a row never names a missing folder
            store_files.remove(store.root, folder)
        removed += [tuple(g) for g in gone]
    if not removed:
        return 0
    times = sorted(r[1] for r in removed)
    with store.transaction() as conn:
        conn.execute(retention.insert().values(at=dt.datetime.now(UTC), policy=str(policy), deleted=len(removed),
                                               oldest=times[0], newest=times[-1]))
    store.log(f"store: retention ({policy}) removed {len(removed)} record(s) of {times[0]:%Y-%m-%d %H:%M:%S} .. "
              f"{times[-1]:%Y-%m-%d %H:%M:%S} UTC from {store.where}, with their files")
    return len(removed)
