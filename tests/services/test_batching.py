"""The micro-batcher in isolation (no server): merging, latency, shedding, failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.batching import MicroBatcher, Overloaded


def _batcher(
    seconds: float, max_wait_s: float = 5.0, max_queue: int = 1000
) -> tuple[MicroBatcher[int, int], list[int]]:
    sizes: list[int] = []

    def model(queries: list[int]) -> list[int]:
        sizes.append(len(queries))
        time.sleep(seconds)
        return [q * 10 for q in queries]

    batcher = MicroBatcher(
        model, max_batch_size=64, max_wait_s=max_wait_s, max_queue=max_queue, on_batch=None
    )
    return batcher, sizes


def test_concurrent_calls_are_merged_and_each_gets_its_own_answer() -> None:
    batcher, sizes = _batcher(0.01)

    async def run() -> list[list[int]]:
        return await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(32)))

    answers = asyncio.run(run())
    assert answers == [[i * 10, (i + 100) * 10] for i in range(32)]
    assert sum(sizes) == 64 and len(sizes) <= 3  # first alone, the rest merged behind it
    assert max(sizes) <= 64
    batcher.close()


def test_a_batch_never_exceeds_max_batch_size() -> None:
    batcher, sizes = _batcher(0.005)

    async def run() -> None:
        await asyncio.gather(*(batcher.submit([1] * 10) for _ in range(40)))

    asyncio.run(run())
    assert sum(sizes) == 400 and max(sizes) <= 64
    batcher.close()


def test_sequential_calls_are_not_held_back_after_a_burst() -> None:
    """A lone request is sent at once, before and after a burst: each runs as its own
    batch, and none waits anywhere near the 5 s queueing limit a held-back request would
    approach (a loose bound: this is not a speed test, which is `recops bench serving`)."""
    batcher, sizes = _batcher(0.002)

    async def run() -> tuple[float, float]:
        async def timed_sequence() -> float:
            worst = 0.0
            for i in range(20):
                start = time.perf_counter()
                assert await batcher.submit([i]) == [i * 10]
                worst = max(worst, time.perf_counter() - start)
            return worst

        before = await timed_sequence()
        await asyncio.gather(*(batcher.submit([i]) for i in range(200)))
        return before, await timed_sequence()

    before, after = asyncio.run(run())
    assert sizes[:20] == [1] * 20 and sizes[-20:] == [1] * 20
    assert after < 1.0 and before < 1.0
    batcher.close()


def test_only_requests_that_really_queued_too_long_are_shed() -> None:
    batcher, _ = _batcher(0.2, max_wait_s=0.05)  # each batch outlasts the queueing limit

    async def run() -> tuple[list[int], BaseException | list[int]]:
        first = asyncio.ensure_future(batcher.submit([1, 2]))  # two queries: runs threaded
        await asyncio.sleep(0.01)
        second = await asyncio.gather(batcher.submit([2]), return_exceptions=True)
        return await first, second[0]

    first, second = asyncio.run(run())
    assert first == [10, 20]
    assert isinstance(second, Overloaded) and second.retry_after_s >= 1
    assert batcher.stats.shed == 1
    batcher.close()


def test_a_full_queue_is_refused_at_once() -> None:
    batcher, _ = _batcher(0.1, max_queue=4)

    async def run() -> list[BaseException | list[int]]:
        running = asyncio.ensure_future(batcher.submit([0, 0]))
        await asyncio.sleep(0.02)  # the first batch is running; the next four queue
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in range(4)]
        await asyncio.sleep(0)
        start = time.perf_counter()
        refused = await asyncio.gather(batcher.submit([9]), return_exceptions=True)
        assert time.perf_counter() - start < 0.05  # refused without waiting for the model
        return [*refused, *(await asyncio.gather(running, *queued))]

    refused, *served = asyncio.run(run())
    assert isinstance(refused, Overloaded)
    assert served == [[0, 0], [0], [10], [20], [30]]
    batcher.close()


def test_a_failing_model_call_fails_its_requests_not_the_batcher() -> None:
    calls = []

    def model(queries: list[int]) -> list[int]:
        calls.append(list(queries))
        if 13 in queries:
            raise ValueError("bad batch")
        return queries

    batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=5.0, max_queue=100)

    async def run() -> list[int]:
        with pytest.raises(ValueError, match="bad batch"):
            await batcher.submit([13])
        return await batcher.submit([1])

    assert asyncio.run(run()) == [1]
    batcher.close()


def test_retry_after_is_the_queue_drain_time_at_the_last_batch_s_own_rate() -> None:
    """A lone query took 0.5 s, so four queued queries take about 2 s to drain (the
    last batch was not full: dividing by max_batch_size would promise 1 s)."""
    batcher, _ = _batcher(0.5, max_queue=4)

    async def run() -> BaseException | list[int]:
        assert await batcher.submit([1]) == [10]  # the last batch: one query, 0.5 s
        running = asyncio.ensure_future(batcher.submit([0, 0]))
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in range(4)]
        await asyncio.sleep(0)
        (refused,) = await asyncio.gather(batcher.submit([9]), return_exceptions=True)
        await asyncio.gather(running, *queued)
        return refused

    refused = asyncio.run(run())
    assert isinstance(refused, Overloaded) and refused.retry_after_s in (2, 3)  # ceil(2.0+)
    batcher.close()


def test_close_stops_the_dispatcher_and_cancels_what_waits() -> None:
    batcher, _ = _batcher(0.2)

    async def run() -> tuple[BaseException | list[int], bool]:
        running = asyncio.ensure_future(batcher.submit([1, 2]))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0)
        batcher.close()
        (outcome,) = await asyncio.gather(waiting, return_exceptions=True)
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.sleep(0)
        return outcome, batcher.closed

    outcome, closed = asyncio.run(run())
    assert isinstance(outcome, asyncio.CancelledError) and closed


def test_drain_waits_for_queued_work_then_a_closed_batcher_sheds() -> None:
    batcher, _ = _batcher(0.1)

    async def run() -> tuple[list[list[int]], BaseException | list[int]]:
        answers = [asyncio.ensure_future(batcher.submit([i, i])) for i in range(3)]
        await asyncio.sleep(0.01)
        await batcher.drain(5.0)
        assert all(a.done() for a in answers)
        batcher.close()
        (late,) = await asyncio.gather(batcher.submit([1]), return_exceptions=True)
        return [a.result() for a in answers], late

    answers, late = asyncio.run(run())
    assert answers == [[0, 0], [10, 10], [20, 20]]
    assert isinstance(late, Overloaded) and late.retry_after_s == 1
