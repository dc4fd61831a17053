"""An order-preserving, memory-bounded process-pool map for loading tracks.

Kept free of TensorFlow imports: spawned workers import this module's dependencies only.
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
from typing import Any, Callable, Iterable, Iterator


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int,
                max_in_flight: int | None = None) -> Iterator[Any]:
    """``map(fn, items)`` in input order, on ``workers`` spawned processes when ``workers > 1``.

    At most ``max_in_flight`` (default ``2 * workers``) results are pending at once, so a slow
    consumer never holds a whole dataset split in memory (``Pool.imap`` would queue every
    result). An exception raised by ``fn`` re-raises here and stops the pool. ``fn`` and the
    items must be picklable; spawned workers re-import the caller's ``__main__`` module.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    max_in_flight = max_in_flight or 2 * workers
    # spawn, not fork: the parent has TensorFlow's threads running.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        remaining = iter(items)
        pending = collections.deque(pool.apply_async(fn, (item,))
                                    for item in itertools.islice(remaining, max_in_flight))
        while pending:
            result = pending.popleft().get()
            for item in itertools.islice(remaining, 1):
                pending.append(pool.apply_async(fn, (item,)))
            yield result
