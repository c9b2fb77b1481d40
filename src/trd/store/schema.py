"""The result store's tables (SQLAlchemy Core) and their version, kept in the database itself.

Four tables, the same on SQLite and PostgreSQL:

``records``      one row per scored scan and model (unique on ``model_sha256, content_key``): indexed
                 columns to query by (time, model, decision, label) and the whole record
                 (``trd.record``) as JSON; ``files`` is the record's folder under the store's files root.
``labels``       the label history: every ``set`` and ``undo`` with who and when (``actor``, ``at``).
                 A record's current label (``records.label`` ...) is the newest ``set`` not undone.
``retention``    one row per retention pass: what it removed, so deletion is never silent.
``trd_meta``     ``schema_version`` and when the store was created.

A newer schema than this trd knows is refused (`SchemaTooNew`); an older one is migrated inside the
opening transaction (`MIGRATIONS`, none yet). Ids are never reused (SQLite AUTOINCREMENT,
PostgreSQL identity), so an id given to a client keeps naming the same record.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from ..errors import ConfigError

SCHEMA_VERSION = 1
UTC = dt.timezone.utc
#: pg_advisory_xact_lock key serialising create/migrate across replicas that start together ('trd_stor').
PG_LOCK_KEY = 0x7472645F73746F72


class SchemaTooNew(ConfigError):
    """The store was written by a newer trd (its schema version is higher than this one's)."""


class UTCDateTime(sa.TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out: timestamptz on PostgreSQL; on SQLite fixed-width
    UTC text, so text order is time order and the index serves time ranges."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store takes aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
metadata = sa.MetaData()

meta = sa.Table("trd_meta", metadata,
                sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.Text, nullable=False))

records = sa.Table(
    "records", metadata,
    sa.Column("id", ID, sa.Identity(), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("content_key", sa.String(200), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # serve | predict | import
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("anomalous", sa.Boolean, nullable=False),
    sa.Column("kind", sa.String(32), nullable=True),  # the 3D file's reader kind (trd.data.readers)
    sa.Column("files", sa.Text, nullable=True),  # folder under the files root; None: no files kept
    sa.Column("label", sa.String(16), nullable=True),  # good | defect | None
    sa.Column("defect_type", sa.String(64), nullable=True),
    sa.Column("label_by", sa.Text, nullable=True),
    sa.Column("label_at", UTCDateTime, nullable=True),
    sa.Column("record", JSON, nullable=False),
    sa.UniqueConstraint("model_sha256", "content_key", name="uq_records_model_scan"),
    sa.Index("ix_records_created_at", "created_at"),
    sa.Index("ix_records_anomalous", "anomalous"),
    sa.Index("ix_records_label", "label"),
    sa.Index("ix_records_model_created", "model_sha256", "created_at"),
    sqlite_autoincrement=True,
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("id", ID, sa.Identity(), primary_key=True),
    sa.Column("record_id", ID, nullable=False),
    sa.Column("action", sa.String(8), nullable=False),  # set | undo
    sa.Column("label", sa.String(16), nullable=True),  # set: the label given
    sa.Column("defect_type", sa.String(64), nullable=True),
    sa.Column("undoes", ID, nullable=True),  # undo: the set it took back
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_labels_record", "record_id", "id"),
    sqlite_autoincrement=True,
)

retention = sa.Table(
    "retention", metadata,
    sa.Column("id", ID, sa.Identity(), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("deleted", sa.Integer, nullable=False),
    sa.Column("oldest", UTCDateTime, nullable=True),
    sa.Column("newest", UTCDateTime, nullable=True),
    sqlite_autoincrement=True,
)

#: version -> the step from version - 1 to it, run inside the opening transaction.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def ensure_schema(conn: Connection, where: str) -> None:
    """Create the tables of an empty database, migrate an older schema, refuse a newer one or a
    database that is not a trd store. ``conn`` holds the write lock (the caller's transaction)."""
    if conn.dialect.name == "postgresql":  # replicas starting together: one creates, the others wait
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
    inspector = sa.inspect(conn)
    if not inspector.has_table("trd_meta"):
        if inspector.has_table("records"):
            raise ConfigError(f"{where}: has a 'records' table but no trd_meta: not a trd result store")
        metadata.create_all(conn)
        conn.execute(meta.insert(), [{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                     {"key": "created_at", "value": dt.datetime.now(UTC).isoformat()}])
        return
    stored = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one_or_none()
    if stored is None or not stored.isdigit():
        raise ConfigError(f"{where}: trd_meta has no valid schema_version: not a trd result store")
    version = int(stored)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(f"{where}: the result store has schema version {version}, but this trd reads versions up "
                           f"to {SCHEMA_VERSION}: upgrade trd (pip install -U trd-anomaly) or use another store")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[target](conn)
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(target)))
