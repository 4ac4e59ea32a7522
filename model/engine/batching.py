"""`BatchingEngine`: the async, per-request face of a batch `Engine`.

Requests submitted while a batch runs wait, then go together in the next batch (up to
`max_batch`): "the CPU engine batches what is pending". The batch runs in a thread so
the event loop stays free to accept requests and stream deltas.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from model.engine.base import (
    DeltaCallback,
    Engine,
    GenerationRequest,
    GenerationResult,
)

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future
    on_delta: DeltaCallback | None


@dataclass
class BatchingStats:
    batches: int = 0
    requests: int = 0
    # batch size -> how many batches had it; bounded by max_batch, unlike a list per batch
    size_histogram: Counter[int] = field(default_factory=Counter)

    @property
    def max_batch_size(self) -> int:
        return max(self.size_histogram, default=0)


class BatchingEngine:
    def __init__(self, engine: Engine, max_batch: int = 16) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.stats = BatchingStats()
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._closed = False

    async def submit(
        self, request: GenerationRequest, on_delta: DeltaCallback | None = None
    ) -> GenerationResult:
        if self._closed:
            raise RuntimeError("engine is shut down")
        loop = asyncio.get_running_loop()
        if self._runner is None:
            self._wakeup = asyncio.Event()
            self._runner = loop.create_task(self._run())
        item = _Pending(request, loop.create_future(), on_delta)
        self._pending.append(item)
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    async def abort(self, request_id: str) -> bool:
        for item in list(self._pending):
            if item.request.request_id == request_id:
                self._pending.remove(item)
                item.future.set_result(GenerationResult(request_id, "", "", (), 0, 0, "abort"))
                return True
        return self.engine.abort(request_id)

    async def check_health(self) -> None:
        await asyncio.to_thread(self.engine.check_health)

    async def shutdown(self) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
        self.engine.shutdown()

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                self.stats.batches += 1
                self.stats.requests += len(batch)
                self.stats.size_histogram[len(batch)] += 1
                await self._run_batch(batch, loop)

    async def _run_batch(self, batch: Sequence[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        callbacks = {p.request.request_id: p.on_delta for p in batch if p.on_delta}

        def on_delta(request_id: str, delta: str) -> None:  # called from the batch thread
            cb = callbacks.get(request_id)
            if cb is not None:
                loop.call_soon_threadsafe(cb, request_id, delta)

        try:
            results = await asyncio.to_thread(
                self.engine.generate, [p.request for p in batch], on_delta if callbacks else None
            )
        except Exception as exc:  # a crashed batch fails its requests, not the worker
            log.exception("batch of %d failed", len(batch))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
