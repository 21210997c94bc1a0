"""Admission control: how many uploads the server takes in, and on how many threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from facefold.serve.limits import UploadError

RETRY_AFTER_SECONDS = 5


class Gate:
    """Admission control: ``workers`` threads run the jobs, ``queue`` more requests may wait.

    :meth:`admit` is entered for a whole request (also while its body is
    received); when ``workers + queue`` requests are already in, it refuses
    with 503 and ``Retry-After`` at once. :meth:`run` hands a job to the pool
    of ``workers`` threads and refuses with 503 when none has started it
    within ``wait_timeout`` seconds. A pool of its own, not the web server's
    40 threads: each thread that ever decodes a big picture keeps its malloc
    arena's memory, so fewer threads is less memory, not just less parallelism.
    """

    def __init__(self, workers: int, queue: int, wait_timeout: float) -> None:
        self.capacity = workers + queue
        self.wait_timeout = wait_timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="facefold-worker")
        self._lock = threading.Lock()  # admit() may be entered from several event loops
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Requests in progress: being received, waiting for a worker or being worked on."""
        return self._admitted

    @contextmanager
    def admit(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self.capacity:
                raise _busy(f"{self.capacity} uploads are already in progress")
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    async def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """``job(*args)`` on a worker thread; 503 if it has not started within the wait."""
        future = self._pool.submit(job, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)),
                                          self.wait_timeout)
        except TimeoutError:
            if future.cancel():  # still queued: give up on it
                raise _busy(f"no worker was free within {self.wait_timeout:g} s") from None
            return await asyncio.wrap_future(future)  # running: let it finish

    def close(self) -> None:
        """Let the worker threads end once their jobs are done."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _busy(why: str) -> UploadError:
    return UploadError(503, f"the server is busy ({why}): try again in a few seconds",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})

