"""Micro-batching: concurrent requests for one model become one batched onnxruntime call.

A request puts its item on a bounded queue and awaits a future. One collector task per model takes every
item already waiting (up to `max_batch`), stacks them into a `(B, ...)` batch and runs the model in a
worker thread (onnxruntime releases the GIL), so the event loop keeps accepting requests meanwhile.

The default is greedy (`max_wait_ms` 0, as in Triton's dynamic batcher without a queue delay): an idle
model starts on a lone request at once, so concurrency 1 pays no waiting, and requests that arrive while
the model is busy pile up and leave together as the next batch, so batches grow with the load by
themselves. A positive `max_wait_ms` also waits that long for company before starting a batch that is not
full: bigger batches on a GPU, at that much latency. A full queue is refused at once (`QueueFull` -> 503 +
Retry-After): under overload, failing fast beats a queue that only grows.

Request deadlines ride on a contextvar (`request_deadline`, a `time.monotonic()` instant) that the /search and
/generate routes set. A request past its deadline is never started on an expensive stage: `submit` refuses it
before queueing, the collector drops queued items whose deadline has passed instead of running them, and the
waiting request stops waiting at its deadline; each raises `DeadlineExceeded` (the route answers 503 +
Retry-After). `check_deadline` and `stage_deadline` do the same for the stages that are not batched (decode,
catalog search).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import numpy as np

from rtdgan.service.metrics import Metrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue is full: the caller should answer 503 with Retry-After."""

    def __init__(self, model: str) -> None:
        super().__init__(f"the {model} queue is full, try again shortly")
        self.model = model


class DeadlineExceeded(Exception):
    """The request passed its deadline before (or while waiting for) a stage: the caller answers 503."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"the request passed its deadline before the {stage} stage")
        self.stage = stage


# The current request's deadline (a time.monotonic() instant), or None: no deadline (warm-up, admin, CLI).
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("request_deadline", default=None)


@contextlib.contextmanager
def deadline_in(seconds: float, start: float | None = None) -> Iterator[float]:
    """Give the code inside (and every stage it awaits) a deadline `seconds` after `start` (a time.monotonic()
    instant; None: now); yields the deadline."""
    deadline = (time.monotonic() if start is None else start) + seconds
    token = request_deadline.set(deadline)
    try:
        yield deadline
    finally:
        request_deadline.reset(token)


def check_deadline(stage: str) -> None:
    """Raise DeadlineExceeded when the current request is already past its deadline (call before a stage)."""
    deadline = request_deadline.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(stage)


@contextlib.contextmanager
def stage_deadline(stage: str) -> Iterator[None]:
    """Start the stage only before the deadline, and stop waiting for it (for a thread limiter's token, say)
    at the deadline: DeadlineExceeded either way. Work already running in a thread finishes first."""
    deadline = request_deadline.get()
    if deadline is None:
        yield
        return
    check_deadline(stage)
    try:
        with anyio.fail_after(deadline - time.monotonic()):
            yield
    except TimeoutError:
        if time.monotonic() < deadline:
            raise  # not ours
        raise DeadlineExceeded(stage) from None


def check_capacity(stage: str, limiter: anyio.CapacityLimiter, queue_size: int, metrics: Metrics | None = None) -> None:
    """A bounded queue in front of a CapacityLimiter: QueueFull when `queue_size` tasks already wait for it."""
    if limiter.statistics().tasks_waiting >= queue_size:
        if metrics is not None:
            metrics.rejected.labels(stage).inc()
        raise QueueFull(stage)


@dataclass
class _Job:
    item: np.ndarray
    future: asyncio.Future
    deadline: float | None  # time.monotonic(); past it the item is dropped, not run


class MicroBatcher:
    """Fuses single items submitted concurrently into batched calls of `run`, off the event loop."""

    def __init__(self, name: str, run: Callable[[np.ndarray], np.ndarray], *, max_batch: int, max_wait_ms: float,
                 queue_size: int, metrics: Metrics | None = None) -> None:
        assert max_batch >= 1 and queue_size >= 1 and max_wait_ms >= 0, "bad micro-batching settings"
        self.name = name
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.metrics = metrics
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        # One thread per model: batches of one model run in order, the two models overlap.
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the collector task on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rtd-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get an error instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError(f"the {self.name} model is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._task = None

    async def submit(self, item: np.ndarray) -> np.ndarray:
        """Queue one item (no batch axis) and await the model's output for it (no batch axis).

        Under a request deadline (`request_deadline`): DeadlineExceeded instead of queueing when it has passed,
        and at the deadline when the item is still waiting (it is then dropped, never run)."""
        if self._queue is None or not self.running:
            raise RuntimeError(f"the {self.name} batcher is not running")
        deadline = request_deadline.get()
        check_deadline(self.name)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(item, future, deadline))
        except asyncio.QueueFull:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.name).inc()
            raise QueueFull(self.name) from None
        self._set_depth()
        if deadline is None:
            return await future
        try:
            # On timeout the future is cancelled: the collector skips it, or ignores its result if running.
            return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(self.name) from None

    def _set_depth(self) -> None:
        if self.metrics is not None and self._queue is not None:
            self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())

    async def _next_batch(self) -> list[_Job]:
        """The first waiting job, plus every job already queued and whatever arrives within max_wait (up to
        max_batch in all)."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        jobs = [await self._queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._queue.get_nowait())  # already waiting: take it without sleeping
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        self._set_depth()
        # A client that left (or stopped waiting at its deadline) cancelled its future; an item past its
        # deadline is answered DeadlineExceeded instead of being run.
        now, live = time.monotonic(), []
        for job in jobs:
            if job.future.done():
                continue
            if job.deadline is not None and now >= job.deadline:
                job.future.set_exception(DeadlineExceeded(self.name))
                continue
            live.append(job)
        return live

    def _timed_run(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        out = self.run(batch)
        return out, time.perf_counter() - start

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            if not jobs:
                continue
            batch = np.stack([job.item for job in jobs])  # (B, ...)
            try:
                out, seconds = await loop.run_in_executor(self._executor, self._timed_run, batch)
                if len(out) != len(jobs):
                    raise RuntimeError(f"{self.name}: batch of {len(jobs)} gave {len(out)} outputs")
            except Exception as e:  # noqa: BLE001 - the error belongs to the requests, the loop goes on
                log.exception("%s: inference failed for a batch of %d", self.name, len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            if self.metrics is not None:
                self.metrics.batch_size.labels(self.name).observe(len(jobs))
                self.metrics.inference.labels(self.name).observe(seconds)
            for job, result in zip(jobs, out, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
