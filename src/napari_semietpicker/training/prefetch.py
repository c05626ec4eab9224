"""Make training batches ahead of time in a background thread, so the device never waits.

Items are made for consecutive steps by ``make(step)``. Because each item depends on its
step number alone (see ``train.step_generator``), prefetching changes nothing in what is
trained on: a run with or without it, interrupted and resumed or not, sees the same data.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class Prefetcher(Generic[T]):
    """Runs ``make(step)`` for ``first_step``, ``first_step + 1``, ... up to ``depth`` ahead.

    ``depth=0`` makes each item in ``get`` itself, with no thread: faster where the host
    does the training too (on a 2-core CPU a producer thread slowed steps by 10-25%, as
    its tensor work competes with the model's for the same cores).

    ``get(step)`` returns the item for that step (steps must be asked in order); an error
    raised by ``make`` is raised again there, in the caller's thread. ``waited_s`` adds up
    the time ``get`` spent waiting: near zero when data keeps up with the device. ``close()``
    stops the thread; use the object as a context manager to be sure it is called.
    """

    def __init__(self, make: Callable[[int], T], first_step: int, depth: int = 2) -> None:
        self._make = make
        self._next = first_step
        self.waited_s = 0.0
        self._queue: queue.Queue[tuple[int, T | None, BaseException | None]] = \
            queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._work, args=(first_step,),
                                            name="semietpicker-prefetch", daemon=True)
            self._thread.start()

    def _work(self, step: int) -> None:
        while not self._stop.is_set():
            entry: tuple[int, T | None, BaseException | None]
            try:
                entry = (step, self._make(step), None)
            except BaseException as err:  # handed to the consumer, who decides
                entry = (step, None, err)
            while not self._stop.is_set():
                try:
                    self._queue.put(entry, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if entry[2] is not None:
                return
            step += 1

    def get(self, step: int) -> T:
        """The item for ``step``: the next one in order."""
        if step != self._next:
            raise ValueError(f"prefetcher expected step {self._next}, was asked for {step}")
        if self._thread is None:
            self._next += 1
            return self._make(step)
        start = time.perf_counter()
        made_for, item, error = self._queue.get()
        self.waited_s += time.perf_counter() - start
        if error is not None:
            raise error
        assert made_for == step
        self._next += 1
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop making items and wait for the thread to end (at most one item's time)."""
        if self._thread is None:
            return
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
