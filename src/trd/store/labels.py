"""Review labels: an operator marks a stored result good (a false alarm, when it was flagged) or a
confirmed defect of a type, with their name; every change is kept, and undo takes back the newest.

The history is a stack of ``set`` events: the label in force is the newest ``set`` that no ``undo``
has taken back, so undo after undo walks back through earlier labels (each undo is an event too,
with who and when). ``records.label`` / ``defect_type`` / ``label_by`` / ``label_at`` hold the label
in force, updated in the same transaction, for queries.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import ConfigError
from .core import utc_text
from .schema import UTC, labels, records

if TYPE_CHECKING:
    from .core import Store

LABELS = ("good", "defect")
#: Defect types become folder names of an export (`trd.store.exports.export_defects`).
DEFECT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_NAME = 100


class NoSuchRecord(ConfigError):
    """No record with this id in the store (the API answers 404)."""


class NothingToUndo(ConfigError):
    """The record has no label left to take back (the API answers 409)."""


@dataclass
class Review:
    """A record's label in force (None: unlabelled) and its whole history, oldest first."""

    label: str | None = None
    defect_type: str | None = None
    by: str | None = None
    at: dt.datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "defect_type": self.defect_type, "by": self.by, "at": utc_text(self.at),
                "history": self.history}


def check_label(label: str, defect_type: str | None, by: str) -> tuple[str, str | None, str]:
    """The label, defect type and name, checked; ConfigError naming what is wrong."""
    if label not in LABELS:
        raise ConfigError(f"label {label!r}: expected one of {', '.join(LABELS)}")
    if label == "defect":
        if not defect_type or not DEFECT_TYPE.fullmatch(defect_type):
            raise ConfigError(f"defect type {defect_type!r}: give one of 1-64 letters, digits, '-' or '_' (it becomes "
                              "a folder name of an export), e.g. scratch")
    elif defect_type:
        raise ConfigError("a defect type goes with the label 'defect' only")
    by = (by or "").strip()
    if not by or len(by) > MAX_NAME or any(ord(c) < 32 for c in by):
        raise ConfigError(f"name {by[:20]!r}: give who labels, 1-{MAX_NAME} printable characters")
    return label, defect_type if label == "defect" else None, by


def _lock(conn: Connection, record_id: int) -> None:
    statement = sa.select(records.c.id).where(records.c.id == record_id)
    if conn.dialect.name == "postgresql":
        statement = statement.with_for_update()  # SQLite: BEGIN IMMEDIATE already holds the write lock
    if conn.execute(statement).first() is None:
        raise NoSuchRecord(f"no result {record_id} in the store")


def _active(conn: Connection, record_id: int) -> list[Any]:
    """The record's ``set`` events that no undo took back, newest first."""
    undone = sa.select(labels.c.undoes).where(labels.c.record_id == record_id, labels.c.undoes.is_not(None))
    return conn.execute(sa.select(labels).where(labels.c.record_id == record_id, labels.c.action == "set",
                                                labels.c.id.not_in(undone)).order_by(labels.c.id.desc())).all()


def _project(conn: Connection, record_id: int) -> None:
    """Copy the label in force into the record's columns."""
    active = _active(conn, record_id)
    top = active[0] if active else None
    conn.execute(records.update().where(records.c.id == record_id).values(
        label=top.label if top else None, defect_type=top.defect_type if top else None,
        label_by=top.actor if top else None, label_at=top.at if top else None))


def set_label(store: Store, record_id: int, label: str, by: str, defect_type: str | None = None) -> Review:
    """Label a stored record (see `check_label`); the review after it."""
    label, defect_type, by = check_label(label, defect_type, by)
    with store.transaction() as conn:
        _lock(conn, record_id)
        conn.execute(labels.insert().values(record_id=record_id, action="set", label=label, defect_type=defect_type,
                                            actor=by, at=dt.datetime.now(UTC)))
        _project(conn, record_id)
    return review(store, record_id)


def undo_label(store: Store, record_id: int, by: str) -> Review:
    """Take back the label in force (the one before it, if any, is in force again); the review after it."""
    by = check_label("good", None, by)[2]
    with store.transaction() as conn:
        _lock(conn, record_id)
        active = _active(conn, record_id)
        if not active:
            raise NothingToUndo(f"result {record_id} has no label to undo")
        conn.execute(labels.insert().values(record_id=record_id, action="undo", undoes=active[0].id, actor=by,
                                            at=dt.datetime.now(UTC)))
        _project(conn, record_id)
    return review(store, record_id)


def review(store: Store, record_id: int) -> Review:
    """The label in force of a stored record and its history."""
    with store.transaction(write=False) as conn:
        row = conn.execute(sa.select(records.c.label, records.c.defect_type, records.c.label_by, records.c.label_at)
                           .where(records.c.id == record_id)).first()
        if row is None:
            raise NoSuchRecord(f"no result {record_id} in the store")
        events = conn.execute(sa.select(labels).where(labels.c.record_id == record_id).order_by(labels.c.id)).all()
    history = [{"event": e.id, "action": e.action, "label": e.label, "defect_type": e.defect_type,
                "undoes": e.undoes, "by": e.actor, "at": utc_text(e.at)} for e in events]
    return Review(row.label, row.defect_type, row.label_by, row.label_at, history)
