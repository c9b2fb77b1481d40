"""What a result store is opened with: its default file name and its retention setting; no database code.

Kept apart from the database code so that a run without a store (``--store none``) never imports
SQLAlchemy (about 0.15 s of a process's start): `trd.store` imports its other modules on first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError

#: A model's store beside it when no ``--store`` is given.
DEFAULT_NAME = "results.db"
#: The retention of a store opened without ``--retain`` (`parse_retention`).
DEFAULT = "10000"


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
