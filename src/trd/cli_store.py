"""``trd store ...``: the result store from the command line (docs/LINE.md), runtime install only.

``list`` and ``export`` query it (time, decision, label, model), ``label`` and ``undo`` review a
result as the page does, ``export-defects`` writes the reviewed scans as a dataset, ``import`` reads
an older ``predictions.jsonl`` into it and ``prune`` applies a retention setting now.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from .errors import ConfigError
from .store.policy import DEFAULT as DEFAULT_RETENTION

STORE_HELP = "The result store: a SQLite file (e.g. runs/puck/results.db) or postgresql://user@host/db."


def store_options(f):
    """Where `trd predict` and `trd serve` store their results (docs/LINE.md)."""
    f = click.option("--retain", default=DEFAULT_RETENTION, show_default=True, metavar="COUNT|AGEd|COUNT,AGEd|none",
                     help="Keep the newest COUNT unlabelled results and/or those of the last AGE days (labelled "
                          "ones are kept); what is removed is logged.")(f)
    f = click.option("--store-files", default=None, type=click.Path(file_okay=False),
                     help="Folder of the stored scans and images (default: STORE-files beside a SQLite store; "
                          "required for PostgreSQL).")(f)
    f = click.option("--store", default=None, metavar="FILE|URL|none",
                     help="Result store: a SQLite file or postgresql://user@host/db (default: results.db beside the "
                          "model; where that folder is read-only, predict's --out or ~/.local/share/trd/stores/).")(f)
    return f


def _open(store: str, files: str | None):  # noqa: ANN202 - trd.store.Store
    """The store, opened without a retention pass (these commands remove nothing unasked)."""
    from .store import Retention, open_store

    return open_store(store, files, Retention(), log=lambda line: click.echo(line, err=True))


def _when(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: expected an ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T08:00:00Z") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _location(f):
    f = click.option("--store-files", default=None, type=click.Path(file_okay=False),
                     help="The store's files folder (default: STORE-files beside a SQLite store).")(f)
    return click.option("--store", required=True, metavar="FILE|URL", help=STORE_HELP)(f)


def _filters(f):
    f = click.option("--model-sha", default=None, help="Only results of this model (sha256 or its first 8+ digits).")(f)
    f = click.option("--label", type=click.Choice(["good", "defect", "any", "none"]), default=None)(f)
    f = click.option("--decision", type=click.Choice(["anomalous", "good"]), default=None)(f)
    f = click.option("--until", default=None, help="Before this time (ISO 8601; UTC unless it says otherwise).")(f)
    return click.option("--since", default=None, help="From this time on (ISO 8601; UTC unless it says otherwise).")(f)


def _query(since, until, decision, label, model_sha) -> dict:  # noqa: ANN001
    return {"since": _when(since, "--since"), "until": _when(until, "--until"), "decision": decision, "label": label,
            "model": model_sha}


@click.group("store", short_help="The result store: list, export, label, import and prune results.")
def store_group() -> None:
    """The result store that trd serve and trd predict write (docs/LINE.md)."""


@store_group.command("list")
@_location
@_filters
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
def list_cmd(store, store_files, since, until, decision, label, model_sha, limit) -> None:
    """Print stored results, newest first, one JSON object a line.

    \b
    Example:
      trd store list --store runs/puck/results.db --decision anomalous --label none
    """
    found = _open(store, store_files).query(**_query(since, until, decision, label, model_sha), limit=limit)
    for stored in found:
        click.echo(json.dumps(stored.summary() | {"model": stored.model_sha256[:12]}))


@store_group.command("export")
@_location
@_filters
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="A .csv or .parquet file.")
def export_cmd(store, store_files, since, until, decision, label, model_sha, out) -> None:
    """Write the matching results to a CSV or Parquet table (Parquet: pip install 'trd-anomaly[parquet]').

    \b
    Example:
      trd store export --store runs/puck/results.db --since 2026-12-01 --out december.csv
    """
    from .store.exports import export_table

    n = export_table(_open(store, store_files), out, **_query(since, until, decision, label, model_sha))
    click.echo(f"{out}: {n} result(s)")


@store_group.command("label")
@_location
@click.argument("result_id", type=int)
@click.option("--good", "good", is_flag=True, help="The scan is good (a false alarm when it was flagged).")
@click.option("--defect", "defect_type", default=None, metavar="TYPE", help="A confirmed defect of this type.")
@click.option("--by", required=True, help="Who labels (kept with the label).")
def label_cmd(store, store_files, result_id, good, defect_type, by) -> None:
    """Label a stored result, as the review page does.

    \b
    Examples:
      trd store label --store runs/puck/results.db 17 --good --by ann
      trd store label --store runs/puck/results.db 18 --defect scratch --by ann
    """
    from .store import set_label

    if good == (defect_type is not None):
        raise ConfigError("give exactly one of --good and --defect TYPE")
    review = set_label(_open(store, store_files), result_id, "good" if good else "defect", by, defect_type)
    click.echo(json.dumps(review.to_dict()))


@store_group.command("undo")
@_location
@click.argument("result_id", type=int)
@click.option("--by", required=True, help="Who takes the label back.")
def undo_cmd(store, store_files, result_id, by) -> None:
    """Take back the newest label of a stored result (the one before it is in force again)."""
    from .store import undo_label

    click.echo(json.dumps(undo_label(_open(store, store_files), result_id, by).to_dict()))


@store_group.command("export-defects")
@_location
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--with-good", is_flag=True, help="Also the scans labelled good, into test/good/.")
@click.option("--model-sha", default=None, help="Only results of this model (sha256 or its first 8+ digits).")
def export_defects_cmd(store, store_files, out, with_good, model_sha) -> None:
    """Write the confirmed defects as OUT/test/<defect type>/{rgb,xyz|depth|normals}/ with OUT/labels.csv.

    No gt/ masks: a confirmed defect is an image-level label (docs/LINE.md).
    """
    from .store.exports import export_defects

    export_defects(_open(store, store_files), out, with_good=with_good, model=model_sha,
                   log=lambda line: click.echo(line, err=True))


@store_group.command("import")
@_location
@click.option("--predictions", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A predictions.jsonl written by trd predict (any version).")
def import_cmd(store, store_files, predictions) -> None:
    """Read the records of a predictions.jsonl into the store (each scan once)."""
    from .store.exports import import_ledger

    counts = import_ledger(_open(store, store_files), predictions, log=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(counts))


@store_group.command("prune")
@_location
@click.option("--retain", required=True, metavar="COUNT|AGEd|COUNT,AGEd",
              help="Keep the newest COUNT unlabelled results and/or those of the last AGE days.")
def prune_cmd(store, store_files, retain) -> None:
    """Apply a retention setting now (labelled results are kept); says what it removed."""
    from .store import parse_retention
    from .store.retention import prune

    policy = parse_retention(retain)
    click.echo(f"removed {prune(_open(store, store_files), policy)} result(s)")
