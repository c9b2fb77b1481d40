"""The result store: every scored scan of `trd serve` and `trd predict` in a database, with its files.

SQLite by default (a file; WAL; several processes of one machine), PostgreSQL by URL (replicas on
several machines); SQLAlchemy Core, torch-free (the runtime install writes it). `core` opens the
store and adds and queries records, `labels` keeps the review labels and their history, `retention`
bounds the store, `files` keeps each record's scan and images, `exports` writes tables and datasets
and imports older ledgers. docs/LINE.md shows the loop it serves.
"""

from .core import DEFAULT_NAME, Store, Stored, store_location, utc_text
from .labels import LABELS, NoSuchRecord, NothingToUndo, Review, review, set_label, undo_label
from .retention import DEFAULT as DEFAULT_RETENTION
from .retention import Retention, parse_retention
from .schema import SCHEMA_VERSION, SchemaTooNew

__all__ = ["DEFAULT_NAME", "DEFAULT_RETENTION", "LABELS", "NoSuchRecord", "NothingToUndo", "Retention", "Review",
           "SCHEMA_VERSION", "SchemaTooNew", "Store", "Stored", "open_store", "parse_retention", "review",
           "set_label", "store_location", "undo_label", "utc_text"]


def open_store(target: str, files: str | None = None, retention: Retention | None = None, log=print) -> Store:  # noqa: ANN001
    """The store at ``target`` (a SQLite file path or a database URL; `store_location`), created on
    first use; ``files``: its files folder (default beside a SQLite file; required for PostgreSQL)."""
    url, root = store_location(target, files)
    return Store(url, root, retention, log)
