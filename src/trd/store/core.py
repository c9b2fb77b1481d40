"""Opening a result store and writing and reading its records (SQLAlchemy Core).

``open_store(target)``: ``target`` is a file path (SQLite, the default: one file, WAL, safe for
several processes of one machine, e.g. a ``trd serve`` and a ``trd predict`` at once) or a URL
(``sqlite:///path`` or ``postgresql://user@host/db``: PostgreSQL for replicas on several machines,
driver psycopg 3, the ``postgres`` extra). The records' files live in a folder: ``<file>-files``
beside a SQLite file, or the folder given (``--store-files``; required for PostgreSQL, shared by
the replicas).

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed record survives a killed process and
a power cut), waits up to 30 s for another writer's lock (``busy_timeout``) and takes the write lock
at the start of every write transaction (``BEGIN IMMEDIATE``: a deferred BEGIN makes
read-then-write transactions of two processes fail with "database is locked" whatever the timeout).
WAL needs shared memory, so the file must be on a local disk, not a network share.

`Store.add` returns only once the row is committed: a caller may acknowledge a record after it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import ConfigError, OutputError, TRDError
from . import files as store_files
from .policy import DEFAULT_NAME, Retention
from .retention import prune
from .schema import UTC, ensure_schema, records

Log = Callable[[str], None]
#: Retention runs after every this many adds of one process (and when the store is opened).
PRUNE_EVERY = 100
SOURCES = ("serve", "predict", "import")
DECISIONS = ("anomalous", "good")
LABEL_FILTERS = ("good", "defect", "any", "none")


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def utc_text(when: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a ``Z`` (the times the API and exports show)."""
    return None if when is None else when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Stored:
    """One stored record: its indexed columns, its current label and the record itself."""

    id: int
    created_at: dt.datetime
    model_sha256: str
    key: str
    name: str
    source: str
    score: float
    anomalous: bool
    kind: str | None
    files: str | None
    label: str | None
    defect_type: str | None
    label_by: str | None
    label_at: dt.datetime | None
    record: dict[str, Any]

    def answer(self) -> dict[str, Any]:
        """The record as the API answers it: with its store ``id``."""
        return self.record | {"id": self.id}

    def summary(self) -> dict[str, Any]:
        """One line of a list: id, name, score, decision, time and label."""
        return {"id": self.id, "name": self.name, "score": self.score, "anomalous": self.anomalous,
                "time": utc_text(self.created_at), "label": self.label, "defect_type": self.defect_type}


def _stored(row: Any) -> Stored:
    m = row._mapping
    return Stored(m["id"], m["created_at"], m["model_sha256"], m["content_key"], m["name"], m["source"], m["score"],
                  bool(m["anomalous"]), m["kind"], m["files"], m["label"], m["defect_type"], m["label_by"],
                  m["label_at"], m["record"])


def store_location(target: str | Path, files: str | Path | None = None) -> tuple[str, Path]:
    """(SQLAlchemy URL, files root) of a ``--store`` value and an optional ``--store-files`` folder."""
    text = str(target)
    if "://" not in text:
        path = Path(text).expanduser()
        path = path / DEFAULT_NAME if path.is_dir() else path
        text = f"sqlite:///{path.absolute()}"
    try:
        url = sa.engine.make_url(text.replace("postgres://", "postgresql://", 1))
    except sa.exc.ArgumentError:
        raise ConfigError(f"--store {target}: not a file path or a database URL") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError(f"--store {target}: a SQLite store needs a file (e.g. --store results.db)")
        root = Path(files) if files is not None else Path(url.database + "-files")
    elif backend == "postgresql":
        if url.drivername == "postgresql":  # SQLAlchemy 2.0 would pick psycopg2 here, 2.1 psycopg: say which
            url = url.set(drivername="postgresql+psycopg")
        if files is None:
            raise ConfigError(f"--store {url.render_as_string(hide_password=True)}: a PostgreSQL store keeps its "
                              "images in a folder every replica can reach: give --store-files FOLDER")
        root = Path(files)
    else:
        raise ConfigError(f"--store {target}: unsupported database {backend!r}; use a SQLite file or a "
                          "postgresql:// URL")
    return url.render_as_string(hide_password=False), root


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi: Any, _: Any) -> None:
        dbapi.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cursor = dbapi.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")  # first: switching to WAL waits for other writers too
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutputError(engine.url.database, f"SQLite cannot use WAL mode here (got {mode!r}); put the store "
                                                   "on a local disk")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("trd_write") else "BEGIN")


class Store:
    """A result store: its database, the folder of its files and its retention."""

    def __init__(self, url: str, root: Path, retention: Retention | None = None, log: Log = print) -> None:
        self.root, self.retention, self.log = root, retention or Retention(), log
        shown = sa.engine.make_url(url)
        self.where = shown.database if shown.get_backend_name() == "sqlite" else shown.render_as_string(True)
        self._adds = 0
        try:
            self.engine = sa.create_engine(url, json_serializer=_dumps, pool_pre_ping=True)
        except ImportError as exc:
            raise ConfigError(f"--store {self.where}: the database driver is not installed ({exc.name}): "
                              "pip install 'trd-anomaly[postgres]'") from None
        if self.engine.dialect.name == "sqlite":
            if sqlite3.sqlite_version_info < (3, 35):
                raise ConfigError(f"the result store needs SQLite 3.35 or newer; this Python has {sqlite3.sqlite_version}")
            try:
                Path(self.where).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(self.where, f"cannot create its folder: {exc.strerror or exc}") from None
            _sqlite_events(self.engine)
        with self.transaction() as conn:
            ensure_schema(conn, self.where)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(self.root, f"cannot create the store's files folder: {exc.strerror or exc}") from None
        store_files.clean_staging(self.root)
        self.prune()

    # --- connections ------------------------------------------------------------------------------

    def transaction(self, write: bool = True) -> Any:
        """A connection in a transaction (write: the write lock taken at once on SQLite), as a context."""
        return _Transaction(self, write)

    def close(self) -> None:
        self.engine.dispose()

    # --- writing ----------------------------------------------------------------------------------

    def stage(self, copies: Mapping[str, Path], data: Mapping[str, bytes]) -> Path:
        """Stage a record's files (`trd.store.files`) before `add`."""
        return store_files.stage(self.root, copies, data)

    def add(self, record: Mapping[str, Any], *, source: str, kind: str | None = None, staged: Path | None = None,
            created_at: dt.datetime | None = None) -> tuple[Stored, bool]:
        """Store ``record`` (a ``trd.record``) with its staged files; (the stored record, whether new).

        A scan already stored for the same model (same content key) is not stored twice: the
        stored one is returned, and the staged files are dropped. Returns after the commit.
        """
        if source not in SOURCES:
            raise ValueError(f"source {source!r}")
        try:
            values = _row(record, source, kind, created_at)
        except TRDError:
            store_files.discard(staged)
            raise
        relative = store_files.record_folder(values["model_sha256"], values["content_key"]) if staged else None
        values["files"] = relative
        statement = (postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert)(records)
        statement = statement.values(**values).on_conflict_do_nothing(
            index_elements=["model_sha256", "content_key"]).returning(records.c.id)
        try:
            with self.transaction() as conn:
                if staged is not None:  # before the commit: a committed row never names a missing folder
                    store_files.place(self.root, staged, relative)
                new_id = conn.execute(statement).scalar_one_or_none()
                if new_id is None:
                    existing = conn.execute(sa.select(records).where(
                        records.c.model_sha256 == values["model_sha256"],
                        records.c.content_key == values["content_key"])).one()
        finally:
            store_files.discard(staged if staged is not None and staged.exists() else None)
        self._adds += 1
        if self._adds % PRUNE_EVERY == 0:
            self.prune()
        if new_id is None:
            return _stored(existing), False
        return Stored(new_id, values["created_at"], values["model_sha256"], values["content_key"], values["name"],
                      source, values["score"], values["anomalous"], kind, relative, None, None, None, None,
                      dict(record)), True

    def prune(self) -> int:
        """Apply the retention setting now (`trd.store.retention.prune`); how many records it removed."""
        return prune(self, self.retention)

    # --- reading ----------------------------------------------------------------------------------

    def get(self, record_id: int) -> Stored | None:
        with self.transaction(write=False) as conn:
            row = conn.execute(sa.select(records).where(records.c.id == record_id)).first()
        return None if row is None else _stored(row)

    def folder(self, stored: Stored) -> Path | None:
        """The folder of a stored record's files (None where it has none)."""
        return None if stored.files is None else self.root / stored.files

    def query(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None, model: str | None = None,
              decision: str | None = None, label: str | None = None, source: str | None = None,
              limit: int | None = 100, before: int | None = None, after: int | None = None,
              oldest_first: bool = False) -> list[Stored]:
        """Records by time (``since`` <= created < ``until``), model (its sha256 or a prefix of at
        least 8 hex digits), decision ("anomalous", "good"), label ("good", "defect", "any",
        "none"), source; newest first unless ``oldest_first``; ``before``/``after``: ids to page by."""
        where = _filters(since, until, model, decision, label, source)
        if before is not None:
            where.append(records.c.id < before)
        if after is not None:
            where.append(records.c.id > after)
        order = records.c.id.asc() if oldest_first else records.c.id.desc()
        statement = sa.select(records).where(*where).order_by(order).limit(limit)
        with self.transaction(write=False) as conn:
            return [_stored(row) for row in conn.execute(statement)]

    def iterate(self, page: int = 500, **filters: Any) -> Iterator[Stored]:
        """Every record matching ``filters`` (as `query`), oldest first, read a page at a time."""
        last = 0
        while chunk := self.query(**filters, limit=page, after=last, oldest_first=True):
            yield from chunk
            last = chunk[-1].id

    def count(self, **filters: Any) -> int:
        where = _filters(**filters)
        with self.transaction(write=False) as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(records).where(*where)).scalar_one()


class _Transaction:
    """``with store.transaction() as conn``: commit on success, roll back on error; database
    failures become OutputError naming the store."""

    def __init__(self, store: Store, write: bool) -> None:
        self.store, self.write = store, write

    def __enter__(self) -> Connection:
        try:
            self.conn = self.store.engine.connect().execution_options(trd_write=self.write)
            self.conn.begin()
        except DBAPIError as exc:
            raise _database_error(self.store.where, exc) from None
        return self.conn

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.conn.commit()
            else:
                self.conn.rollback()
        except DBAPIError as failure:
            raise _database_error(self.store.where, failure) from None
        finally:
            self.conn.close()
        if isinstance(exc, DBAPIError):
            raise _database_error(self.store.where, exc) from None


def _database_error(where: str, exc: DBAPIError) -> OutputError:
    text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if isinstance(exc, OperationalError) and "readonly" in text.replace(" ", "").lower():
        text = "read-only: choose a store you may write to (--store)"
    return OutputError(where, f"result store: {text}")


def _filters(since: dt.datetime | None = None, until: dt.datetime | None = None, model: str | None = None,
             decision: str | None = None, label: str | None = None, source: str | None = None) -> list[Any]:
    where: list[Any] = []
    if since is not None:
        where.append(records.c.created_at >= since)
    if until is not None:
        where.append(records.c.created_at < until)
    if model:
        if len(model) < 8 or any(c not in "0123456789abcdef" for c in model.lower()):
            raise ConfigError(f"--model-sha {model!r}: give the model's sha256 or at least its first 8 hex digits")
        where.append(records.c.model_sha256.startswith(model.lower()))
    if decision is not None:
        if decision not in DECISIONS:
            raise ConfigError(f"--decision {decision!r}: expected one of {', '.join(DECISIONS)}")
        where.append(records.c.anomalous == (decision == "anomalous"))
    if label is not None:
        if label not in LABEL_FILTERS:
            raise ConfigError(f"--label {label!r}: expected one of {', '.join(LABEL_FILTERS)}")
        where.append(records.c.label.is_(None) if label == "none" else records.c.label.is_not(None) if label == "any"
                     else records.c.label == label)
    if source is not None:
        where.append(records.c.source == source)
    return where


def _row(record: Mapping[str, Any], source: str, kind: str | None, created_at: dt.datetime | None) -> dict[str, Any]:
    """The columns of ``record``; TRDError for a record that cannot be stored as it is."""
    name = record.get("name")
    try:
        sha, key, score = record["model"]["sha256"], record["key"], float(record["score"])
    except (KeyError, TypeError, ValueError):
        raise TRDError(f"record {name!r}: not a trd.record with a model sha256, a content key and a score") from None
    try:
        _dumps(record)
    except (TypeError, ValueError) as exc:
        raise TRDError(f"record {name!r}: cannot be stored as JSON ({exc}); NaN and infinite values are refused") \
            from None
    if not math.isfinite(score):
        raise TRDError(f"record {name!r}: score {score} is not finite")
    return {"created_at": created_at or dt.datetime.now(UTC), "model_sha256": str(sha), "content_key": str(key),
            "name": str(name), "source": source, "score": score, "anomalous": bool(record.get("anomalous")),
            "kind": kind, "record": dict(record)}
