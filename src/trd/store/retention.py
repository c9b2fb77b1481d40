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
from typing import TYPE_CHECKING

import sqlalchemy as sa

from . import files as store_files
from .policy import Retention
from .schema import UTC, labels, records, retention

if TYPE_CHECKING:
    from .core import Store

#: Rows deleted per transaction: a writer of another process never waits long for the lock.
BATCH = 500


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
