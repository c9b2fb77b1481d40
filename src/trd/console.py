"""What a long run shows on the console: the progress of its steps and the warnings it met.

`Progress`: a tqdm bar on stderr when stderr is a terminal; otherwise (a pipe, a log file) plain
lines through the caller's ``log``, at most one every `PLAIN_EVERY_S` seconds. A step that took
that long ends with one line saying how long it took; a shorter one prints nothing, so a log stays
readable, a quick command stays quiet and nothing is printed before an early error (its one line
stays the only one).

`WarningTally`: the CLI's ``warnings.showwarning``. A run may warn about hundreds of files (a
sensor's dead edge columns give every scan the same warning): the first warning of a kind is
printed at once as ``warning: ...``, the others of that kind are counted, and at the end of the run
one line per repeated kind gives the count and the first few files. A kind is the warning's
category with its message, the file and the numbers left out: "FILE: corner patches ... widened
(top-left 5x5)" is one kind for every file and patch size, while a mask that looks inverted and one
with grey levels (both `trd.data.io.MaskWarning`) stay two kinds, each printed once.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from tqdm import tqdm

Log = Callable[[str], None]
#: Seconds between two plain progress lines (stderr not a terminal); TRD_PROGRESS_SECONDS sets it
#: (0: a line for every batch).
PLAIN_EVERY_S = 10.0


def _every_s() -> float:
    try:
        return max(0.0, float(os.environ.get("TRD_PROGRESS_SECONDS", PLAIN_EVERY_S)))
    except ValueError:
        return PLAIN_EVERY_S


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 05 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def estimate_left(done: int, total: int, elapsed: float) -> str:
    """``~3 min 20 s left at this pace``: the pace so far extrapolated (``""`` before the first item or
    after the last)."""
    if done <= 0 or done >= total:
        return ""
    return f"~{duration(elapsed / done * (total - done))} left at this pace"


class Progress:
    """Progress of one step over ``total`` items (``with Progress(...) as p: ... p.advance(n)``).

    On a terminal a bar (tqdm, cleared when the step ends); elsewhere plain lines through ``log``
    (``test: scoring: 16/60 samples (27 %), 12 s, ~33 s left at this pace``), at most one every ``every_s``
    seconds. When a step of at least ``every_s`` seconds ends without an error, one line says how
    long it took.
    """

    def __init__(self, what: str, total: int, unit: str, log: Log, *, bar: bool | None = None,
                 every_s: float | None = None) -> None:
        self.what, self.total, self.unit, self.log = what, total, unit, log
        self.every_s = _every_s() if every_s is None else every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(total=total, desc=what, unit=unit, leave=False, file=sys.stderr) if use_bar else None

    def advance(self, n: int = 1) -> None:
        if n <= 0:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            left = estimate_left(self.done, self.total, now - self.start)
            self.log(f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done // self.total} %), "
                     f"{duration(now - self.start)}" + (f", {left}" if left else ""))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            if kind is None:
                self.bar.refresh()  # the last count is drawn even when it came faster than tqdm redraws
            self.bar.close()
        took = time.monotonic() - self.start
        if kind is None and self.done and took >= self.every_s:
            self.log(f"{self.what}: {self.done} {self.unit} in {duration(took)}")


class Ticker:
    """A long step without countable items (an ONNX export is one library call): on a terminal a
    line that counts the seconds; elsewhere a line through ``log`` every ``every_s`` seconds (at
    least 1); when a step of at least ``every_s`` seconds ends without an error, one line says how
    long it took."""

    def __init__(self, what: str, log: Log, *, bar: bool | None = None, every_s: float | None = None) -> None:
        self.what, self.log = what, log
        self.every_s = _every_s() if every_s is None else every_s
        use_bar = sys.stderr.isatty() if bar is None else bar
        self.bar = tqdm(desc=what, bar_format="{desc}: {elapsed}", leave=False, file=sys.stderr) if use_bar else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="trd-ticker", daemon=True)
        self.start = time.monotonic()

    def _tick(self) -> None:
        interval = 1.0 if self.bar is not None else max(self.every_s, 1.0)
        while not self.stop.wait(interval):
            if self.bar is not None:
                self.bar.refresh()
            else:
                self.log(f"{self.what}: working, {duration(time.monotonic() - self.start)} so far")

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join()
        if self.bar is not None:
            self.bar.close()
        took = time.monotonic() - self.start
        if kind is None and took >= self.every_s:
            self.log(f"{self.what}: done in {duration(took)}")


# --- warnings -------------------------------------------------------------------------------------

#: How many files a summary line names.
FIRST_FILES = 3
_NUMBER = re.compile(r"\d+(\.\d+)?")


def split_file(text: str) -> tuple[str | None, str]:
    """(file, problem) of a message ``"FILE: problem"`` as trd words them; (None, text) otherwise."""
    head, sep, rest = text.partition(": ")
    if sep and ("/" in head or "\\" in head or re.search(r"\.\w{1,5}$", head)) and "\n" not in head:
        return head, rest
    return None, text


@dataclass
class _Kind:
    problem: str  # the first message of the kind, without its file
    category: str
    count: int = 0
    files: list[str] = field(default_factory=list)


class WarningTally:
    """Counts a run's warnings by kind; prints the first of each kind at once (``write``), and
    `summary` gives one line per kind that came more than once."""

    def __init__(self, write: Log) -> None:
        self.write = write
        self.kinds: dict[Any, _Kind] = {}

    def show(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        """The ``warnings.showwarning`` hook: one line (``warning: ...``), no source location."""
        lines = str(message).strip().splitlines()
        text = lines[0] if lines else category.__name__
        path, problem = split_file(text)
        key = (category, _NUMBER.sub("#", problem))
        kind = self.kinds.get(key)
        if kind is None:
            kind = self.kinds[key] = _Kind(problem, category.__name__)
            self.write(f"warning: {text}")
        kind.count += 1
        if path is not None and len(kind.files) < FIRST_FILES and path not in kind.files:
            kind.files.append(path)

    def summary(self) -> list[str]:
        """One line per kind that came more than once: the count, the first message and the first files."""
        out = []
        for kind in self.kinds.values():
            if kind.count < 2:
                continue
            files = ""
            if kind.files:
                more = kind.count - len(kind.files)
                files = f"; files: {', '.join(kind.files)}" + (f" and {more} more" if more > 0 else "")
            out.append(f"warning: {kind.count} warnings of this kind in this run ({kind.category}), the first: "
                       f"{kind.problem}{files}")
        return out
