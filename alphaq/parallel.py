"""Per-matrix work on several threads, each with one torch thread, results in input order.

torch's CPU operators release the GIL, so ``workers`` threads that each run one matrix single-threaded keep
``workers`` cores busy; this scales better than one matrix at a time on every torch thread (memory-bound
element-wise passes, and on a shared machine OpenMP threads that wait on each other: a quantize on 2 loaded cores
ran 30x slower with 2 torch threads than with 1, ``bench/results/scale.json``). The plan's error measurement and
the quantize stage use it; their results do not depend on the thread count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from alphaq.diagnostics.spectrum import default_workers  # the inspect stage's rule: torch's thread count

_In = TypeVar("_In")
_Out = TypeVar("_Out")


def thread_map(fn: Callable[[_In], _Out], items: Iterable[_In], workers: int | None = None) -> Iterator[_Out]:
    """``map(fn, items)`` on ``workers`` threads with one torch thread each, in input order.

    At most ``2 x workers`` items are in flight, so an item's inputs are held only around its computation.
    The first exception stops the map (queued items are cancelled) and is raised. torch's thread count is set to 1
    while the map runs and restored after.

    Args:
        fn: the per-item work.
        items: the inputs (consumed lazily).
        workers: threads (None: :func:`default_workers`); 1 runs ``fn`` in this thread, torch untouched.

    Returns:
        An iterator of ``fn(item)``, in the order of ``items``.
    """
    count = default_workers() if workers is None else int(workers)
    if count <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=count)
    pending: deque = deque()
    torch.set_num_threads(1)
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * count:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


__all__ = ["default_workers", "thread_map"]
