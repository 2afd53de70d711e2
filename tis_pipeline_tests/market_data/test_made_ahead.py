"""``ingest.made_ahead``: reads several at once on threads of their own, handed over in order."""

from __future__ import annotations

import threading
import time

import pytest

from tis_pipeline.market_data.ingest import made_ahead


class _Counting:
    """A ``make`` that records how many calls run at once and on which threads."""

    def __init__(self, delays: dict[int, float]) -> None:
        self.delays = delays
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.started: list[int] = []

    def __call__(self, item: int) -> int:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
            self.started.append(item)
        time.sleep(self.delays.get(item, 0.0))
        with self.lock:
            self.running -= 1
        return item * 10


def test_results_come_in_the_items_order_with_at_most_ahead_made_at_once():
    # the first item is the slowest: the second is made beside it, and still handed over after it
    make = _Counting({0: 0.3, 1: 0.01, 2: 0.2, 3: 0.0, 4: 0.05})
    assert list(made_ahead(make, range(5), ahead=2, thread_name="t-read")) == [0, 10, 20, 30, 40]
    assert make.most == 2
    assert sorted(make.started) == [0, 1, 2, 3, 4]
    assert all(name.startswith("t-read") for name in make.threads)


def test_one_ahead_makes_one_at_a_time_and_fewer_items_than_ahead_are_all_made():
    one = _Counting({0: 0.05, 1: 0.05})
    assert list(made_ahead(one, [0, 1, 2], ahead=1)) == [0, 10, 20]
    assert one.most == 1
    few = _Counting({})
    assert list(made_ahead(few, [7], ahead=3)) == [70]
    assert list(made_ahead(few, [], ahead=3)) == []


def test_no_item_is_skipped_at_the_boundary_of_the_first_batch():
    # the first ``ahead`` items are taken from an iterator: the one after them must not be lost
    assert list(made_ahead(lambda x: x, iter(range(7)), ahead=3)) == list(range(7))


def test_the_next_items_are_made_while_the_caller_holds_the_current_one():
    made = threading.Event()

    def make(item: int) -> int:
        if item == 2:
            made.set()
        return item

    pieces = made_ahead(make, range(4), ahead=2)
    assert next(pieces) == 0
    assert made.wait(timeout=10)  # items 1 and 2 are made while 0 is held (two ahead)
    assert list(pieces) == [1, 2, 3]


def test_leaving_early_waits_for_the_makes_in_flight():
    finished: list[int] = []

    def make(item: int) -> int:
        time.sleep(0.2)
        finished.append(item)
        return item

    pieces = made_ahead(make, range(10), ahead=2, thread_name="early-read")
    assert next(pieces) == 0
    pieces.close()
    # the two in flight when it closed ended before close returned; nothing after them was started
    assert sorted(finished) == [0, 1, 2]
    assert not [t for t in threading.enumerate() if t.name.startswith("early-read")]


def test_a_failing_make_raises_in_the_caller_at_its_turn():
    def make(item: int) -> int:
        if item == 2:
            raise ValueError("piece 2 unreadable")
        return item

    pieces = made_ahead(make, range(5), ahead=2)
    assert [next(pieces), next(pieces)] == [0, 1]
    with pytest.raises(ValueError, match="piece 2 unreadable"):
        next(pieces)


def test_ahead_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        list(made_ahead(lambda x: x, [1], ahead=0))
