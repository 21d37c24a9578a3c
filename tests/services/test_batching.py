"""The greedy batch dispatcher in isolation (no server): latency, merging, shedding."""

from __future__ import annotations

import asyncio
import time

from services.batching import GreedyDispatcher

DROPPED = "dropped"


def _dispatcher(max_latency_ms: int = 5000) -> tuple[GreedyDispatcher, list[int]]:
    sizes: list[int] = []
    disp = GreedyDispatcher(
        max_latency_in_ms=max_latency_ms,
        max_batch_size=64,
        fallback=lambda: DROPPED,
        get_batch_size=len,
    )
    return disp, sizes


def _call(disp: GreedyDispatcher, sizes: list[int], seconds: float):
    async def model(batches):
        sizes.append(len(batches))
        await asyncio.sleep(seconds)
        return [[x * 10 for x in b] for b in batches]

    return disp(model)


def test_concurrent_calls_are_merged_and_each_gets_its_own_answer() -> None:
    disp, sizes = _dispatcher()
    call = _call(disp, sizes, 0.01)

    async def run():
        return await asyncio.gather(*(call([i]) for i in range(32)))

    answers = asyncio.run(run())
    assert answers == [[i * 10] for i in range(32)]
    assert sum(sizes) == 32 and len(sizes) <= 3  # first alone, the rest merged behind it


def test_sequential_calls_are_not_held_back_after_a_burst() -> None:
    """BentoML's stock policy delays every low-load request by the mean past wait; this one
    sends a lone request at once, before and after a burst."""
    disp, sizes = _dispatcher()
    call = _call(disp, sizes, 0.002)

    async def run() -> tuple[float, float]:
        async def timed_sequence() -> float:
            worst = 0.0
            for i in range(20):
                start = time.perf_counter()
                assert await call([i]) == [i * 10]
                worst = max(worst, time.perf_counter() - start)
            return worst

        before = await timed_sequence()
        await asyncio.gather(*(call([i]) for i in range(200)))
        return before, await timed_sequence()

    before, after = asyncio.run(run())
    assert after < 0.05 and before < 0.05


def test_only_requests_that_really_queued_too_long_are_shed() -> None:
    disp, sizes = _dispatcher(max_latency_ms=50)
    call = _call(disp, sizes, 0.2)  # each batch outlasts the queueing limit

    async def run():
        first = asyncio.ensure_future(call([1]))
        await asyncio.sleep(0.01)
        second = await call([2])  # queued behind a 200 ms batch: waited > 50 ms
        return await first, second

    assert asyncio.run(run()) == ([10], DROPPED)
