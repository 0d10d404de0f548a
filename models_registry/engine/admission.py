"""A bounded admission gate for heavy in-process work (generation, reward scoring).

What it bounds: within one process, at most ``max_running`` holders at once, and at most
``max_waiting`` callers blocked waiting for a place (each for at most its own timeout).
A caller that finds the waiting room full is refused at once (``GateFull``); one that
waits past its timeout gets ``GateTimeout``. Either way it never starts, so a burst of
requests costs a refusal each, not a web thread held for the length of a generation.
It works across threads of one process (runserver, gunicorn ``gthread`` workers).

What it does not bound: other processes. Each gunicorn worker process has its own gate,
as it has its own ``GenerationService`` and its own copy of the weights, so the limit
that protects a process's cores and memory is a per-process one; the site-wide bound is
``workers x (max_running + max_waiting)``. A shared counter in the cache or database
was not used: a worker killed while holding a place would leak it until some expiry,
and the thing being protected (one process's generation thread) is per process anyway.

Plain Python (no Django), so it can be tested alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

__all__ = ["AdmissionGate", "GateFull", "GateTimeout"]


class GateFull(RuntimeError):
    """Every place is taken and the waiting room is full."""


class GateTimeout(TimeoutError):
    """No place came free within the caller's timeout."""


class AdmissionGate:
    """At most ``max_running`` holders; at most ``max_waiting`` callers waiting."""

    def __init__(self, *, max_running: int, max_waiting: int) -> None:
        if not isinstance(max_running, int) or max_running < 1:
            raise ValueError("max_running must be an integer >= 1")
        if not isinstance(max_waiting, int) or max_waiting < 0:
            raise ValueError("max_waiting must be an integer >= 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._running = 0
        self._waiting = 0
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def acquire(self, timeout: float) -> None:
        """Take a place, waiting at most ``timeout`` seconds; ``release()`` gives it back.

        Raises ``GateFull`` at once when no place is free and ``max_waiting`` callers are
        already waiting, ``GateTimeout`` when ``timeout`` passes first.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._running < self.max_running and self._waiting == 0:
                self._running += 1
                return
            if self._waiting >= self.max_waiting:
                raise GateFull(
                    f"{self._running} running and {self._waiting} waiting: the limit is "
                    f"{self.max_running} running and {self.max_waiting} waiting"
                )
            self._waiting += 1
            try:
                while self._running >= self.max_running:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise GateTimeout(f"no place came free within {timeout:g} s")
                    self._cond.wait(remaining)
                self._running += 1
            finally:
                self._waiting -= 1

    def release(self) -> None:
        with self._cond:
            if self._running <= 0:
                raise RuntimeError("release() without acquire()")
            self._running -= 1
            self._cond.notify()

    @contextlib.contextmanager
    def admitted(self, timeout: float) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()
