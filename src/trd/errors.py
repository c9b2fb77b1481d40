"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class TRDError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class DataError(TRDError):
    """A data file or folder is missing, unreadable or inconsistent."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(TRDError):
    """A checkpoint cannot be loaded (truncated, other model, other version)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class ConfigError(TRDError):
    """A configuration value or override is invalid."""


_KINDS: dict[str, type[TRDError]] = {"TRDError": TRDError, "DataError": DataError,
                                     "CheckpointError": CheckpointError, "ConfigError": ConfigError}


def from_worker(exc: RuntimeError) -> TRDError | None:
    """The TRDError a DataLoader worker raised, rebuilt from torch's wrapper, else None.

    torch cannot rebuild an exception whose constructor takes more than a message (DataError takes a
    path and a problem), so it raises a RuntimeError holding the worker's whole traceback; its last
    line is ``trd.errors.<Kind>: <message>``.
    """
    text = str(exc).strip()
    head = text.split(" ", 2)
    if len(head) < 3 or head[0] != "Caught" or head[1] not in _KINDS or "DataLoader worker" not in head[2]:
        return None
    kind = head[1]
    prefix = f"trd.errors.{kind}: "
    last = text.splitlines()[-1]
    if not last.startswith(prefix):
        return None
    message = last[len(prefix):]
    if kind in ("DataError", "CheckpointError") and ": " in message:
        return _KINDS[kind](*message.split(": ", 1))
    return TRDError(message)


def reraise_worker_errors(batches: Iterator[T]) -> Iterator[T]:
    """Yield from a DataLoader iterator; a TRDError from a worker surfaces as itself, not a RuntimeError."""
    iterator = iter(batches)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            error = from_worker(exc)
            if error is None:
                raise
            raise error from None
        yield item
