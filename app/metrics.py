"""Prometheus metrics of the API process (prometheus-client), one registry per app.

Counted as they happen, in this process: HTTP requests and their latency by route
template and status (`MetricsMiddleware`), upload bytes and rejections by reason
(`Metrics.upload`), moderation decisions and tokens from each LLM reply
(`Metrics.observe_reply`). Read from Redis at scrape time (`RedisCollector`): the LLM
request backlog and in-flight requests, live LLM workers and their batching statistics,
the t2v jobs in each RQ state and their render times (`gpt4video.job_timings`). The
README lists them for a Grafana dashboard.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import APIError
from gpt4video import llm_protocol as wire
from gpt4video.job_timings import read_durations
from gpt4video.jobs import T2V_QUEUE
from gpt4video.settings import Settings

log = logging.getLogger("gpt4video.api")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others: "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RQ_REGISTRIES = {"started": StartedJobRegistry, "finished": FinishedJobRegistry, "failed": FailedJobRegistry,
                  "deferred": DeferredJobRegistry, "scheduled": ScheduledJobRegistry, "canceled": CanceledJobRegistry}


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("g4v_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=r)
        self.latency = Histogram("g4v_http_request_duration_seconds", "time to the end of the response body",
                                 ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.upload_bytes = Counter("g4v_upload_bytes", "bytes of accepted uploads (multipart and data: URLs)",
                                    registry=r)
        self.uploads = Counter("g4v_uploads", "accepted uploads", ["created"], registry=r)
        self.upload_rejections = Counter("g4v_upload_rejections", "refused uploads by reason (the error code)",
                                         ["reason"], registry=r)
        self.moderation = Counter("g4v_moderation_decisions", "safety decisions on LLM replies",
                                  ["stage", "decision", "category"], registry=r)
        self.tokens = Counter("g4v_llm_tokens", "tokens of answered LLM requests", ["kind"], registry=r)
        self.replies = Counter("g4v_llm_replies", "LLM replies by status and finish reason",
                               ["status", "finish_reason"], registry=r)

    @contextmanager
    def upload(self) -> Iterator[_UploadOutcome]:
        """Around one upload: count its bytes when accepted, its error code when refused."""
        outcome = _UploadOutcome()
        try:
            yield outcome
        except APIError as exc:
            self.upload_rejections.labels(exc.code).inc()
            raise
        if outcome.size is not None:
            self.upload_bytes.inc(outcome.size)
            self.uploads.labels(str(outcome.created).lower()).inc()

    def observe_reply(self, reply: wire.LLMReply) -> None:
        self.replies.labels(reply.status, reply.finish_reason if reply.status == "ok" else "").inc()
        if reply.status not in ("ok", "refused"):
            return
        if reply.refusal is not None:
            self.moderation.labels("user_turn", "refused", reply.refusal.category).inc()
            return
        self.moderation.labels("user_turn", "allowed", "").inc()
        for hit in reply.withheld:
            self.moderation.labels("caption", "withheld", hit.category).inc()
        if reply.captions:
            self.moderation.labels("caption", "allowed", "").inc(len(reply.captions))
        self.tokens.labels("prompt").inc(reply.prompt_tokens)
        self.tokens.labels("completion").inc(reply.completion_tokens)


@dataclass
class _UploadOutcome:
    size: int | None = None
    created: bool = False

    def accepted(self, size: int, created: bool) -> None:
        self.size, self.created = size, created


class RedisCollector(Collector):
    """State shared by every process, read from Redis when Prometheus scrapes."""

    def __init__(self, connection: redis.Redis, heartbeat_ttl_s: float) -> None:
        self.redis = connection
        self.heartbeat_ttl_s = heartbeat_ttl_s

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        started = time.perf_counter()
        try:
            yield from self._llm()
            yield from self._t2v()
            up = 1.0
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreadable (%s); queue and job metrics left out", exc)
            up = 0.0
        scrape = GaugeMetricFamily("g4v_metrics_redis_up", "whether Redis answered this scrape")
        scrape.add_metric([], up)
        yield scrape
        took = GaugeMetricFamily("g4v_metrics_redis_scrape_seconds", "time reading Redis for this scrape")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _llm(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        backlog = GaugeMetricFamily("g4v_llm_queue_depth", "LLM requests in the request stream (waiting or in "
                                    "flight; 429 at MAX_PENDING_LLM_REQUESTS)")
        backlog.add_metric([], self.redis.xlen(wire.REQUESTS_STREAM))
        yield backlog
        pending = GaugeMetricFamily("g4v_llm_pending_requests", "LLM requests a worker has taken and not answered")
        pending.add_metric([], self._pending())
        yield pending
        names = [n.decode() for n in self.redis.zrangebyscore(wire.WORKERS_ZSET, time.time() - self.heartbeat_ttl_s,
                                                               "+inf")]
        workers = GaugeMetricFamily("g4v_llm_workers", "LLM workers with a recent heartbeat")
        workers.add_metric([], len(names))
        yield workers
        yield from self._worker_stats(names)

    def _pending(self) -> int:
        try:
            return int(self.redis.xpending(wire.REQUESTS_STREAM, wire.GROUP)["pending"])
        except redis.ResponseError:  # no consumer group yet: no worker has ever started
            return 0

    def _worker_stats(self, names: list[str]) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily("g4v_llm_worker_requests", "requests a worker served", labels=["worker"])
        refused = CounterMetricFamily("g4v_llm_worker_refused", "requests a worker refused", labels=["worker"])
        failed = CounterMetricFamily("g4v_llm_worker_failed", "requests a worker failed", labels=["worker"])
        batches = HistogramMetricFamily("g4v_llm_worker_batch_size", "requests decoded together (hf engine)",
                                        labels=["worker"])
        for name in names:
            raw = self.redis.get(wire.worker_stats_key(name))
            if not raw:
                continue
            stats = json.loads(raw)
            requests.add_metric([name], stats.get("requests", 0))
            refused.add_metric([name], stats.get("refused", 0))
            failed.add_metric([name], stats.get("failed", 0))
            histogram = {int(size): n for size, n in (stats.get("batch_size_histogram") or {}).items()}
            if histogram:
                buckets, total, running = [], 0, 0
                for size in sorted(histogram):
                    running += histogram[size]
                    total += size * histogram[size]
                    buckets.append((str(size), running))
                buckets.append(("+Inf", running))
                batches.add_metric([name], buckets, total)
        yield from (requests, refused, failed, batches)

    def _t2v(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        jobs = GaugeMetricFamily("g4v_t2v_jobs", "video jobs in each RQ state", labels=["state"])
        queue = Queue(T2V_QUEUE, connection=self.redis)
        jobs.add_metric(["queued"], queue.count)
        for state, registry in _RQ_REGISTRIES.items():
            jobs.add_metric([state], registry(queue=queue).get_job_count(cleanup=False))
        yield jobs
        durations = HistogramMetricFamily("g4v_t2v_job_duration_seconds", "t2v render time, start to outcome "
                                          "(succeeded, failed, refused, canceled; error: raised, maybe retried)",
                                          labels=["status"])
        for status, (buckets, total) in read_durations(self.redis).items():
            durations.add_metric([status], buckets, total)
        yield durations


class MetricsMiddleware:
    """Counts each HTTP request by its route template (never the raw path), method (any
    other than the usual ones is "other") and status, so label values stay bounded, and
    times it to the end of its body (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path_format", None) or "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            labels = (route, method, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


def install_metrics(app: FastAPI, settings: Settings) -> Metrics:
    """GET /metrics, the request middleware (added last: outermost, it times everything
    inside) and the Redis collector (its own connection, used only while scraping)."""
    from app.routers.metrics import router

    metrics = app.state.metrics = Metrics()
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=1)
    metrics.registry.register(RedisCollector(connection, settings.heartbeat_ttl_s))
    app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return metrics
