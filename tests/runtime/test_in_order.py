"""`trd.runtime.batches.InOrder`: predict's writes on a thread of their own, in order, failures surfaced."""

from __future__ import annotations

import threading
import time

import pytest

from trd.runtime import batches
from trd.runtime.batches import InOrder


def test_calls_run_in_the_order_given_on_one_other_thread() -> None:
    done, threads = [], set()

    def write(i: int) -> None:
        time.sleep(0.002 * (i % 3))  # uneven durations: a pool of several would reorder them
        threads.add(threading.current_thread().name)
        done.append(i)

    with InOrder("trd-test") as writes:
        for i in range(40):
            writes.submit(write, i)
    assert done == list(range(40))
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_the_caller_waits_when_the_writes_fall_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "WRITE_AHEAD", 2)
    gate, started = threading.Event(), []
    with InOrder("trd-test") as writes:
        for i in range(2):
            writes.submit(lambda i=i: (started.append(i), gate.wait(5)))
        waiter = threading.Thread(target=writes.submit, args=(lambda: started.append(2),))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive()  # two waiting: the third submit blocks
        gate.set()
        waiter.join(5)
    assert started == [0, 1, 2]


def test_a_failed_write_raises_in_the_caller_and_the_ones_behind_it_are_dropped() -> None:
    done, gate = [], threading.Event()

    def fail() -> None:
        gate.wait(5)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with InOrder("trd-test") as writes:
            writes.submit(fail)
            writes.submit(done.append, 0)  # waits behind the failing call
            gate.set()
            time.sleep(0.2)
            writes.submit(done.append, 1)  # raises here: the failure is seen
    assert done == []


def test_what_was_submitted_is_written_when_the_block_fails_for_another_reason() -> None:
    done = []
    with pytest.raises(KeyError):
        with InOrder("trd-test") as writes:
            for i in range(5):
                writes.submit(lambda i=i: (time.sleep(0.01), done.append(i)))
            raise KeyError("scoring failed")
    assert done == list(range(5))
