"""A small asyncio micro-batcher for the model call (our own code, no BentoML internals).

Concurrent requests each ``await batcher.submit(queries)``; one dispatcher task merges
whatever is queued into a single model call and hands every request its own share of
the answers. Policy (greedy):

* whenever no batch is running, send everything queued (up to ``max_batch_size``
  queries) at once; while one runs, the next batch accumulates. A lone request is never
  held back waiting for company, and under load batches grow as large as the model's
  own speed allows;
* a request that has *really* waited longer than ``max_wait_s`` in the queue is shed
  with :class:`Overloaded` (the service answers 503 + ``Retry-After``), and so is one
  that arrives while ``max_queue`` queries are already waiting: overload is refused at
  once instead of timing out.

Why not BentoML's own batching: its batchable API is reachable in-process only through
BentoML's private modules (the dispatcher the HTTP route uses). The documented way,
``bentoml.depends`` on a second service with a batchable API, was measured against this
batcher with the same model stand-in (a [B, 64] x [64, 12102] product and top-10), wrk,
4 s per level, back to back on the shared 2-core machine (load average 24):

* concurrency 1: this batcher 25 req/s; ``depends`` 20 (``@bentoml.api`` front) and 17
  (plain-route front);
* concurrency 8: 83 req/s, 0 errors; ``depends`` 50 and 48 req/s, 12 errors each;
* concurrency 32: 133 req/s, 0 errors; ``depends`` 59 and 61 req/s, 61 and 83 errors.

The ``depends`` client adds an HTTP hop to a second process on the same cores and its
session fails requests under concurrency (500s: "Cannot write to closing transport").

Where the model runs: a batch of up to ``inline_max`` queries (default one: nobody else
is waiting) runs on the event loop itself; larger batches run on one dedicated thread
(torch releases the GIL), so the loop keeps parsing the next requests while a batch
computes. Measured back to back on the shared 2-core machine (tiny SASRec, wrk):
always-inline was 11-38 % faster at concurrency 1 and 25-30 % slower at 32 than
always-threaded; the split keeps the better of both. A lone request still goes through
the queue and the dispatcher task, never straight from ``submit``: tried, and with the
model run inside ``submit`` the loop parsed no other request meanwhile, so concurrent
requests were never merged (96 requests in 32-way parallel rounds became 96 batches).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger("recops.service")

Q = TypeVar("Q")
R = TypeVar("R")
MAX_RETRY_AFTER_S = 60


class Overloaded(Exception):
    """The request was shed; retry after ``retry_after_s`` seconds."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


@dataclass
class _Pending(Generic[Q, R]):
    queries: Sequence[Q]
    future: asyncio.Future[list[R]]
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Counters for tests and metrics: batches run, queries scored, requests shed."""

    batches: int = 0
    queries: int = 0
    shed: int = 0
    last_batch_s: float = 0.0
    last_batch_size: int = 0


class MicroBatcher(Generic[Q, R]):
    """Merge concurrent ``submit`` calls into one ``run_batch(queries)`` call (see module doc).

    ``run_batch`` must return one result per query, in order. ``on_batch(size)`` (optional)
    observes every batch size, e.g. for a Prometheus histogram.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Q]], list[R]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        inline_max: int = 1,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.inline_max = inline_max
        self.stats = BatchStats()
        self._queue: deque[_Pending[Q, R]] = deque()
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="recops-model")
        self._closed = False
        self._running: list[_Pending[Q, R]] = []  # the batch in the model right now

    async def submit(self, queries: Sequence[Q]) -> list[R]:
        """The results for ``queries`` (at most ``max_batch_size``), computed in a shared batch."""
        if not queries:
            return []
        if self._closed:  # e.g. this model was just swapped out; the next request is served
            raise Overloaded("the model behind this request was replaced", 1)
        if self._queued + len(queries) > self.max_queue:
            self.stats.shed += 1
            raise Overloaded(f"{self._queued} queries already queued", self._retry_after())
        loop = asyncio.get_running_loop()
        self._ensure_running(loop)
        pending: _Pending[Q, R] = _Pending(queries, loop.create_future())
        self._queue.append(pending)
        self._queued += len(queries)
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    async def drain(self, timeout_s: float) -> None:
        """Return once nothing is queued or running (or after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while (self._queue or self._running) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        # the last batch's callers were woken with their answers: let them take them
        # before the caller of drain (e.g. closing this batcher) goes on
        await asyncio.sleep(0)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (the model thread is shut down)."""
        return self._closed

    def close(self) -> None:
        """Stop the dispatcher and the model thread (pending requests are cancelled)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        for pending in [*self._running, *self._queue]:  # nobody waits forever
            pending.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- the dispatcher -------------------------------------------------------------
    def _ensure_running(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._dispatch_forever())

    async def _dispatch_forever(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take_batch(time.monotonic())
                if batch:
                    await self._run(loop, batch)

    def _take_batch(self, now: float) -> list[_Pending[Q, R]]:
        """Pop whole requests up to ``max_batch_size`` queries; shed the expired ones."""
        batch: list[_Pending[Q, R]] = []
        size = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the client went away
                self._pop()
                continue
            if now - head.enqueued_at > self.max_wait_s:
                self._pop()
                self.stats.shed += 1
                head.future.set_exception(
                    Overloaded(f"queued {now - head.enqueued_at:.1f}s", self._retry_after())
                )
                continue
            if batch and size + len(head.queries) > self.max_batch_size:
                break
            batch.append(self._pop())
            size += len(head.queries)
        return batch

    def _pop(self) -> _Pending[Q, R]:
        pending = self._queue.popleft()
        self._queued -= len(pending.queries)
        return pending

    def _count(self, size: int, seconds: float) -> None:
        self.stats.last_batch_s = seconds
        self.stats.last_batch_size = size
        self.stats.batches += 1
        self.stats.queries += size
        if self.on_batch is not None:
            self.on_batch(size)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Q, R]]) -> None:
        queries = [q for pending in batch for q in pending.queries]
        started = time.perf_counter()
        self._running = batch
        try:
            if len(queries) <= self.inline_max:
                results = self.run_batch(queries)
            else:
                results = await loop.run_in_executor(self._executor, self.run_batch, queries)
        except Exception as exc:  # one bad batch fails its requests, never the dispatcher
            logger.exception("model call failed for a batch of %d", len(queries))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._running = []
        self._count(len(queries), time.perf_counter() - started)
        at = 0
        for pending in batch:
            share = results[at : at + len(pending.queries)]
            at += len(pending.queries)
            if not pending.future.done():
                pending.future.set_result(share)

    def _retry_after(self) -> int:
        """Seconds a client should wait: the queue's drain time, at least one, at most
        ``MAX_RETRY_AFTER_S``. The time per query comes from the last batch *as it ran*
        (its own size, not ``max_batch_size``: under light load batches are small); a
        batch's cost grows less than linearly with its size, so this errs long."""
        per_query = self.stats.last_batch_s / max(1, self.stats.last_batch_size)
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(self._queued * per_query)))
