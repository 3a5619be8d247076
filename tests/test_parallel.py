"""alphaq.parallel.thread_map: input order, one torch thread per worker, the first error stops the map."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from alphaq.parallel import thread_map


def test_results_come_in_input_order_from_several_threads() -> None:
    seen: set[int] = set()

    def work(k: int) -> tuple[int, int]:
        time.sleep(0.01 * (k % 3))  # later items finish first sometimes
        seen.add(threading.get_ident())
        return k, torch.get_num_threads()

    before = torch.get_num_threads()
    out = list(thread_map(work, range(20), workers=2))
    assert [k for k, _ in out] == list(range(20))
    assert {threads for _, threads in out} == {1}  # one torch thread inside each worker
    assert len(seen) == 2 and torch.get_num_threads() == before  # restored after


def test_the_first_error_is_raised_and_later_items_are_not_started() -> None:
    started: list[int] = []

    def work(k: int) -> int:
        started.append(k)
        if k == 3:
            raise ValueError("matrix 3 is bad")
        time.sleep(0.01)
        return k

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="matrix 3 is bad"):
        list(thread_map(work, range(1000), workers=2))
    assert max(started) < 20  # at most 2 x workers in flight: the rest never ran
    assert torch.get_num_threads() == before


def test_one_worker_runs_in_this_thread() -> None:
    assert list(thread_map(lambda k: (k, threading.get_ident()), range(3), workers=1)) == [
        (k, threading.get_ident()) for k in range(3)
    ]
