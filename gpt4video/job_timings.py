"""How long t2v jobs take: a histogram in Redis that every t2v worker adds to and the API's
/metrics reads (`g4v_t2v_job_duration_seconds`, by the render's outcome).

One hash, `g4v:t2v:durations`, with fields `<status>|<le>` (cumulative bucket counts, as
Prometheus counts them), `<status>|count` and `<status>|sum`; HINCRBY/HINCRBYFLOAT in one
transaction, so several workers never lose an observation.
"""

from __future__ import annotations

import redis

DURATIONS_KEY = "g4v:t2v:durations"
# A tiny CPU render takes under a second, a real model on a GPU minutes.
BUCKETS_S = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


def record_duration(connection: redis.Redis, status: str, seconds: float) -> None:
    pipe = connection.pipeline()
    for le in BUCKETS_S:
        if seconds <= le:
            pipe.hincrby(DURATIONS_KEY, f"{status}|{le}", 1)
    pipe.hincrby(DURATIONS_KEY, f"{status}|count", 1)
    pipe.hincrbyfloat(DURATIONS_KEY, f"{status}|sum", seconds)
    pipe.execute()


def read_durations(connection: redis.Redis) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """status -> (buckets [(le, cumulative count)…, ("+Inf", count)], sum of seconds)."""
    raw = {k.decode(): float(v) for k, v in connection.hgetall(DURATIONS_KEY).items()}
    out: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for status in sorted({field.split("|", 1)[0] for field in raw}):
        buckets = [(str(le), raw.get(f"{status}|{le}", 0.0)) for le in BUCKETS_S]
        buckets.append(("+Inf", raw.get(f"{status}|count", 0.0)))
        out[status] = (buckets, raw.get(f"{status}|sum", 0.0))
    return out
