"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


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

