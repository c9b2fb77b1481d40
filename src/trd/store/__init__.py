"""The result store: every scored scan of `trd serve` and `trd predict` in a database, with its files.

SQLite by default (a file; WAL; several processes of one machine), PostgreSQL by URL (replicas on
several machines); SQLAlchemy Core, torch-free (the runtime install writes it). `core` opens the
store and adds and queries records, `labels` keeps the review labels and their history, `retention`
bounds the store, `files` keeps each record's scan and images, `exports` writes tables and datasets
and imports older ledgers, `policy` holds the default file name and the retention setting. The
database side is imported when one of its names is first used (`__getattr__`), so a run with
``--store none`` never loads SQLAlchemy. docs/LINE.md shows the loop it serves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .policy import DEFAULT as DEFAULT_RETENTION
from .policy import DEFAULT_NAME, Retention, parse_retention

if TYPE_CHECKING:
    from .core import Store, Stored, store_location, utc_text
    from .labels import LABELS, NoSuchRecord, NothingToUndo, Review, review, set_label, undo_label
    from .schema import SCHEMA_VERSION, SchemaTooNew

#: The database side, imported on first use (SQLAlchemy's import is ~0.15 s that a run with
#: ``--store none`` never needs): name -> its module.
_ON_FIRST_USE = {**dict.fromkeys(("Store", "Stored", "store_location", "utc_text"), "core"),
                 **dict.fromkeys(("LABELS", "NoSuchRecord", "NothingToUndo", "Review", "review", "set_label",
                                  "undo_label"), "labels"),
                 **dict.fromkeys(("SCHEMA_VERSION", "SchemaTooNew"), "schema")}

__all__ = ["DEFAULT_NAME", "DEFAULT_RETENTION", "LABELS", "NoSuchRecord", "NothingToUndo", "Retention", "Review",
           "SCHEMA_VERSION", "SchemaTooNew", "Store", "Stored", "open_store", "parse_retention", "review",
           "set_label", "store_location", "undo_label", "utc_text"]


def __getattr__(name: str) -> Any:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_ON_FIRST_USE[name]}", __name__), name)


def open_store(target: str, files: str | None = None, retention: Retention | None = None, log=print) -> Store:  # noqa: ANN001
    """The store at ``target`` (a SQLite file path or a database URL; `store_location`), created on
    first use; ``files``: its files folder (default beside a SQLite file; required for PostgreSQL)."""
    from .core import Store, store_location

    url, root = store_location(target, files)
    return Store(url, root, retention, log)
