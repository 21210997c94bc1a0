"""Admission control: whose uploads the server receives, how many it takes in, on how many threads.

An upload first enters :class:`Reception` (per client address, and a budget of body bytes in
memory) while its body arrives; only a complete body enters the :class:`Gate` that guards the
model. A slow client therefore holds its own socket and nothing else.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from facefold.serve.limits import UploadError

RETRY_AFTER_SECONDS = 5


class Gate:
    """Admission control: ``workers`` threads run the jobs, ``queue`` more requests may wait.

    :meth:`admit` is entered by a request whose body has been received; when
    ``workers + queue`` requests are already in, it refuses with 503 and
    ``Retry-After`` at once. :meth:`run` hands a job to the pool
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


class Reception:
    """Uploads in progress (being received, waiting or worked on), per client address.

    :meth:`enter` refuses (429) a client that already has ``per_client`` uploads in
    progress; the ``charge`` function it yields counts the bytes of the body received and
    refuses (503) the chunk that would take the bodies of all uploads in progress past
    ``max_bytes``. A slow client's body costs only the few bytes it has sent.
    """

    def __init__(self, per_client: int, max_bytes: int) -> None:
        self.per_client = per_client
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._clients: Counter[str] = Counter()
        self.bytes = 0  # of the bodies of the uploads in progress

    @contextmanager
    def enter(self, client: str) -> Iterator[Callable[[int], None]]:
        with self._lock:
            if self._clients[client] >= self.per_client:
                raise UploadError(429, f"this address already has {self.per_client} uploads "
                                       "in progress: wait for their answers",
                                  {"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._clients[client] += 1
        held = 0

        def charge(count: int) -> None:
            nonlocal held
            with self._lock:
                if self.bytes + count > self.max_bytes:
                    raise _busy(f"{self.max_bytes / 2**20:,.0f} MB of uploads are in memory")
                self.bytes += count
                held += count

        try:
            yield charge
        finally:
            with self._lock:
                self.bytes -= held
                self._clients[client] -= 1
                if not self._clients[client]:
                    del self._clients[client]


class MemoryBudget:
    """Bytes of decoded pictures the workers hold at once, at most ``total``.

    A worker :meth:`hold`s what a picture needs (known from its header) from before it is
    decoded until it is closed, waiting while others hold the rest. So two large colour
    pictures are decoded one after the other instead of together, and the memory of all
    pictures is ``total`` however many workers there are; a picture needing more than
    ``total`` (refused earlier by the per-picture limit anyway) holds it all.
    """

    def __init__(self, total: int, wait_timeout: float) -> None:
        self.total = total
        self.wait_timeout = wait_timeout
        self.free = total
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, count: int) -> Iterator[None]:
        count = min(max(count, 0), self.total)
        with self._changed:
            if not self._changed.wait_for(lambda: self.free >= count, self.wait_timeout):
                raise _busy(f"other pictures take the {self.total / 2**20:,.0f} MB of memory "
                            f"for {self.wait_timeout:g} s")
            self.free -= count
        try:
            yield
        finally:
            with self._changed:
                self.free += count
                self._changed.notify_all()


def _busy(why: str) -> UploadError:
    return UploadError(503, f"the server is busy ({why}): try again in a few seconds",
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})

