"""Wire format between the API and the LLM workers, over Redis (no torch here).

- Requests: stream `g4v:llm:requests`, consumer group `llm-workers`. Each entry is
  `{"payload": LLMRequest JSON}`. Workers read with XREADGROUP, ACK and delete when the
  reply is written; a worker that dies leaves its entries pending, and another worker
  takes them with XAUTOCLAIM once they have been idle `llm_claim_idle_s` (a live worker
  keeps its in-flight entries fresh by re-claiming them on each heartbeat). An entry
  delivered more than `MAX_DELIVERIES` times is failed rather than retried forever.
- Replies: stream `g4v:llm:out:<request id>`; entries `{"type": "delta", "text": …}`
  while streaming and one `{"type": "final", "result": LLMReply JSON}`. It expires.
- Aborts: pub/sub channel `g4v:llm:abort`, message = request id.
- Heartbeats: sorted set `g4v:llm:workers` (member = worker name, score = last beat).
  A worker beats only while its engine passes `check_health`; one whose engine fails
  leaves the set and exits. Key `g4v:llm:worker:<name>`: its statistics and engine health
  as JSON.
- Precompute (PRECOMPUTE_FEATURES=true): stream `g4v:llm:precompute`, group `llm-workers`;
  the API adds `{"video_id": sha256, "path": …}` for each upload, one worker encodes the
  video's features into the shared feature store and ACKs. Best effort: a lost entry
  only means the first question encodes the video itself.
- Failures: an `LLMReply` with status "error" or "expired" carries a `FailureCode`,
  which the API maps to its HTTP answer (`app.failures`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from model.engine.base import FailureCode

REQUESTS_STREAM = "g4v:llm:requests"
GROUP = "llm-workers"
ABORT_CHANNEL = "g4v:llm:abort"
WORKERS_ZSET = "g4v:llm:workers"
MAX_DELIVERIES = 3
PRECOMPUTE_STREAM = "g4v:llm:precompute"
PRECOMPUTE_MAXLEN = 10_000  # entries kept at most (approximate trim): uploads outrunning the workers
REPLY_TTL_S = 300


def reply_stream(request_id: str) -> str:
    return f"g4v:llm:out:{request_id}"


def worker_stats_key(name: str) -> str:
    return f"g4v:llm:worker:{name}"


class WireTurn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str
    videos: list[str] = Field(default_factory=list)


class WireSampling(BaseModel):
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class LLMRequest(BaseModel):
    id: str
    turns: list[WireTurn]
    sampling: WireSampling
    video_paths: dict[str, str] = Field(default_factory=dict)
    stream: bool = False
    deadline: float  # epoch seconds; a worker that picks it up later drops it


class SafetyHit(BaseModel):
    category: str
    score: float


class LLMReply(BaseModel):
    id: str
    status: Literal["ok", "refused", "error", "expired"]
    text: str = ""
    raw_text: str = ""
    captions: list[str] = Field(default_factory=list)  # allowed captions, in order
    withheld: list[SafetyHit] = Field(default_factory=list)  # captions blocked by safety
    refusal: SafetyHit | None = None  # the user turn was refused
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    error_code: FailureCode | None = None
    worker: str = ""

    @classmethod
    def failure(cls, request_id: str, code: FailureCode, error: str, worker: str) -> LLMReply:
        status: Literal["error", "expired"] = "expired" if code == FailureCode.EXPIRED else "error"
        return cls(id=request_id, status=status, error=error, error_code=code, worker=worker)
