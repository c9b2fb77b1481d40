"""Micro-batching: one engine worker scores the requests that arrive close together in one call.

Requests are first *admitted* (at most ``capacity`` may wait at once: the rest are refused with
503 before their upload is read, so memory stays bounded), then read, then *submitted*. The worker
takes the waiting requests, up to ``max_batch``, once the oldest has waited ``max_wait`` seconds or
the batch is full, and scores them in one engine call (onnxruntime and torch release the GIL, so
the event loop and the readers keep going meanwhile).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

Engine = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass
class Scored:
    """One request's share of an engine call: the batch's outputs and its row in them."""

    outputs: dict[str, np.ndarray]
    row: int
    batch_size: int
    queue_ms: float  # from submission to the start of the engine call
    score_ms: float  # the engine call's time divided by the batch size


@dataclass
class _Job:
    rgb: np.ndarray  # 1 x 3 x S x S
    x3d: np.ndarray
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """The engine worker thread and its bounded queue."""

    def __init__(self, engine: Engine, max_batch: int, max_wait_s: float, capacity: int,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self.engine, self.max_batch, self.max_wait_s, self.capacity = engine, max_batch, max_wait_s, capacity
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._waiting = 0  # admitted and not yet taken by the worker (reading, or queued)
        self._closed = self._flushing = False
        self._thread = threading.Thread(target=self._run, name="trd-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests admitted and waiting for the engine."""
        return self._waiting

    def admit(self) -> bool:
        """Reserve a place in the queue; False when it is full or the worker is closing."""
        with self._cond:
            if self._closed or self._waiting >= self.capacity:
                return False
            self._waiting += 1
            return True

    def leave(self) -> None:
        """Give back the place of an admitted request that will not be submitted (bad input)."""
        with self._cond:
            self._waiting -= 1

    def submit(self, rgb: np.ndarray, x3d: np.ndarray) -> Future:
        """Queue an admitted request's inputs; the future resolves to its `Scored`."""
        job = _Job(rgb, x3d)
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def flush(self) -> None:
        """Stop waiting for batches to fill (no more requests will come: the service is draining)."""
        with self._cond:
            self._flushing = True
            self._cond.notify()

    def close(self) -> None:
        """Score what was submitted, then stop the worker."""
        with self._cond:
            self._closed = self._flushing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _take(self) -> list[_Job]:
        with self._cond:
            while not self._jobs:
                if self._closed:
                    return []
                self._cond.wait()
            deadline = self._jobs[0].queued + self.max_wait_s
            while len(self._jobs) < self.max_batch and not self._flushing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            jobs = [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]
            self._waiting -= len(jobs)
            return jobs

    def _run(self) -> None:
        while jobs := self._take():
            start = time.perf_counter()
            try:
                outputs = self.engine(np.concatenate([j.rgb for j in jobs]), np.concatenate([j.x3d for j in jobs]))
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, not silence
                for job in jobs:
                    job.future.set_exception(exc)
                continue
            score_ms = (time.perf_counter() - start) * 1e3 / len(jobs)
            self._on_batch(len(jobs))
            for row, job in enumerate(jobs):
                job.future.set_result(Scored(outputs, row, len(jobs), (start - job.queued) * 1e3, score_ms))
