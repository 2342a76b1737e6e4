"""Micro-batching: the batcher alone, its deadlines, then concurrent requests through uvicorn, then a full queue (503)."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import anyio
import httpx
import numpy as np
import pytest

from rtdgan.index.runtime.onnx import OnnxGenerator, OnnxModel
from rtdgan.service.batching import (
    DeadlineExceeded,
    MicroBatcher,
    QueueFull,
    _Job,
    check_capacity,
    deadline_in,
    stage_deadline,
)
from rtdgan.service.metrics import Metrics
from tests.service.conftest import Tiny, settings_for, uvicorn_server


def run_async(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_batcher_fuses_concurrent_items_and_keeps_their_order() -> None:
    sizes: list[int] = []

    def double(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return batch * 2

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher("m", double, max_batch=4, max_wait_ms=50, queue_size=32, metrics=Metrics())
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(np.full(3, i, np.float32)) for i in range(10)))
        finally:
            await batcher.stop()

    out = run_async(main())
    assert [float(o[0]) for o in out] == [2.0 * i for i in range(10)]
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) == 3


def test_batcher_waits_at_most_max_wait() -> None:
    async def main() -> float:
        batcher = MicroBatcher("m", lambda b: b, max_batch=8, max_wait_ms=30, queue_size=8)
        await batcher.start()
        start = time.perf_counter()
        await batcher.submit(np.zeros(2, np.float32))  # alone: leaves after max_wait, not never
        elapsed = time.perf_counter() - start
        await batcher.stop()
        return elapsed

    assert 0.025 <= run_async(main()) < 1.0


def test_greedy_batcher_starts_at_once_and_fuses_what_piles_up_while_busy() -> None:
    gate = threading.Event()
    sizes: list[int] = []

    def gated(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        if len(sizes) == 1:
            gate.wait(10)  # the first batch holds the model while others queue up
        return batch + 1

    async def main() -> list[np.ndarray]:
        # max_wait_ms=0 with a huge queue: were it still waiting for company, the lone first item would
        # wait forever for max_batch items that never come. It must start alone.
        batcher = MicroBatcher("m", gated, max_batch=8, max_wait_ms=0, queue_size=32)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(np.zeros(2, np.float32)))
            while not sizes:
                await asyncio.sleep(0.001)
            rest = [asyncio.ensure_future(batcher.submit(np.full(2, i, np.float32))) for i in range(1, 6)]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, *rest)
        finally:
            await batcher.stop()

    out = run_async(main())
    assert [float(o[0]) for o in out] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sizes == [1, 5]  # the lone request went alone; the five that queued meanwhile left together


def test_batcher_refuses_when_the_queue_is_full_and_survives_errors() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def slow(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        gate.wait(10)
        if len(calls) == 1:
            raise RuntimeError("model exploded")
        return batch

    async def main() -> None:
        metrics = Metrics()
        batcher = MicroBatcher("slow", slow, max_batch=1, max_wait_ms=0, queue_size=1, metrics=metrics)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.zeros(1)))
        await asyncio.sleep(0.05)  # the collector has taken it: the queue is empty again
        second = asyncio.ensure_future(batcher.submit(np.ones(1)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit(np.ones(1))
        assert metrics.queue_depth.labels("slow")._value.get() == 1
        gate.set()
        with pytest.raises(RuntimeError, match="exploded"):
            await first  # the error goes to the request ...
        assert float((await second)[0]) == 1.0  # ... and the batcher goes on
        assert metrics.rejected.labels("slow")._value.get() == 1
        await batcher.stop()

    run_async(main())


def test_batcher_refuses_an_item_already_past_its_deadline() -> None:
    ran: list[int] = []

    async def main() -> None:
        batcher = MicroBatcher("m", lambda b: ran.append(len(b)) or b, max_batch=4, max_wait_ms=0, queue_size=4)
        await batcher.start()
        try:
            with deadline_in(-1.0), pytest.raises(DeadlineExceeded, match="before the m stage"):
                await batcher.submit(np.zeros(2, np.float32))
            assert batcher._queue is not None and batcher._queue.empty()  # never queued
            with deadline_in(5.0):
                assert float((await batcher.submit(np.ones(2, np.float32)))[0]) == 1.0  # within it: served
        finally:
            await batcher.stop()

    run_async(main())
    assert ran == [1]


def test_batcher_stops_waiting_at_the_deadline_and_never_runs_the_item() -> None:
    gate = threading.Event()
    ran: list[list[float]] = []

    def gated(batch: np.ndarray) -> np.ndarray:
        ran.append([float(x[0]) for x in batch])
        if len(ran) == 1:
            gate.wait(10)  # the first batch holds the model
        return batch

    async def main() -> float:
        batcher = MicroBatcher("m", gated, max_batch=8, max_wait_ms=0, queue_size=8)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(np.zeros(1, np.float32)))  # no deadline
            while not ran:
                await asyncio.sleep(0.001)
            start = time.perf_counter()
            with deadline_in(0.1), pytest.raises(DeadlineExceeded):
                await batcher.submit(np.full(1, 7.0, np.float32))  # queued behind the busy model
            waited = time.perf_counter() - start
            gate.set()
            await first
            await batcher.submit(np.full(1, 8.0, np.float32))
            return waited
        finally:
            gate.set()
            await batcher.stop()

    waited = run_async(main())
    assert 0.08 <= waited < 1.0  # answered at its deadline, not when the model was free again
    assert ran == [[0.0], [8.0]]  # the expired item was dropped, never run


def test_collector_drops_a_queued_item_past_its_deadline() -> None:
    ran: list[int] = []

    async def main() -> None:
        batcher = MicroBatcher("m", lambda b: ran.append(len(b)) or b, max_batch=4, max_wait_ms=0, queue_size=4)
        await batcher.start()
        try:
            # As if its waiter had not yet noticed: the collector must not run it.
            job = _Job(np.zeros(1, np.float32), asyncio.get_running_loop().create_future(), time.monotonic() - 0.01)
            assert batcher._queue is not None
            batcher._queue.put_nowait(job)
            with pytest.raises(DeadlineExceeded):
                await asyncio.wait_for(job.future, 5)
        finally:
            await batcher.stop()

    run_async(main())
    assert ran == []


def test_stage_deadline_and_bounded_limiter_queue() -> None:
    async def main() -> None:
        entered = []
        with deadline_in(-1.0), pytest.raises(DeadlineExceeded, match="decode"):
            with stage_deadline("decode"):
                entered.append(1)  # past the deadline: never started
        assert entered == []
        start = time.perf_counter()
        with deadline_in(0.05), pytest.raises(DeadlineExceeded, match="search"):
            with stage_deadline("search"):
                await asyncio.sleep(5)  # stops waiting at the deadline
        assert time.perf_counter() - start < 1.0
        with stage_deadline("any"):  # no deadline set: nothing to check
            await asyncio.sleep(0)

        metrics = Metrics()
        limiter = anyio.CapacityLimiter(1)
        await limiter.acquire()
        check_capacity("decode", limiter, 1, metrics)  # nobody waits yet
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="decode"):
            check_capacity("decode", limiter, 1, metrics)
        assert metrics.rejected.labels("decode")._value.get() == 1
        waiter.cancel()
        limiter.release()

    run_async(main())


def bucket(metrics: str, le: str, model: str) -> float:
    return float(re.search(rf'rtd_batch_size_bucket{{le="{le}",model="{model}"}} (\S+)', metrics).group(1))


def test_concurrent_searches_are_batched_and_answered_correctly(tiny: Tiny) -> None:
    async def fire(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/search", files={"image": ("q.png", tiny.query_for(pid), "image/png")}, data={"k": "1"})
                for pid in tiny.product_ids + tiny.product_ids[:6]))

    with uvicorn_server(settings_for(tiny, max_batch=16, max_wait_ms=100)) as base:
        responses = run_async(fire(base))
        metrics = httpx.get(f"{base}/metrics").text
    assert [r.status_code for r in responses] == [200] * 16
    # Every request got its own answer back out of the shared batch.
    assert [r.json()["results"][0]["product_id"] for r in responses] == list(tiny.product_ids + tiny.product_ids[:6])
    for model in ("generator", "embedder"):
        count = float(re.search(rf'rtd_batch_size_count{{model="{model}"}} (\S+)', metrics).group(1))
        assert bucket(metrics, "1.0", model) < count, f"no {model} batch above 1:\n{metrics}"
        assert bucket(metrics, "16.0", model) == count  # never above max_batch


def test_full_queue_is_503_with_retry_after(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    running, gate = threading.Event(), threading.Event()

    def slow_generator(self: OnnxGenerator, batch: np.ndarray) -> np.ndarray:
        running.set()
        gate.wait(20)
        return OnnxModel.__call__(self, batch)

    async def fire(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            def post() -> asyncio.Future:
                return asyncio.ensure_future(client.post("/generate", files={"image": ("q.png", tiny.query_for("P000"))}))

            tasks = [post()]
            await anyio.to_thread.run_sync(running.wait, 20)  # the first is in the model now
            tasks += [post() for _ in range(5)]
            deadline = time.monotonic() + 20
            while sum(t.done() for t in tasks) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # one waits in the queue, four are refused at once
            gate.set()
            return await asyncio.gather(*tasks)

    with uvicorn_server(settings_for(tiny, max_batch=1, queue_size=1, retry_after_s=3)) as base:
        monkeypatch.setattr(OnnxGenerator, "__call__", slow_generator, raising=False)
        responses = run_async(fire(base))
        metrics = httpx.get(f"{base}/metrics").text
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 503, 503, 503, 503]
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "3"
            assert r.json()["error"] == "overloaded"
    # Refused by the generator's queue, or already by the bounded queue of decodes before it (queue_size too).
    rejected = re.findall(r'rtd_queue_rejected_total{model="(\w+)"} (\S+)', metrics)
    assert sum(float(n) for _, n in rejected) == 4 and {m for m, _ in rejected} <= {"generator", "decode"}
