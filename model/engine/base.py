"""The engine interface the LLM worker talks to, and the types that cross it.

Two implementations: `hf` (transformers, CPU or GPU; `model.engine.hf_engine`) and
`vllm` (GPU only; `model.engine.vllm_engine`). Both take the same requests and return
the same results, so the worker and the API never know which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "abort", "error"]


class FailureCode(StrEnum):
    """Why a request failed. It travels from the engine (`GenerationResult.error_code`)
    through the wire (`LLMReply.error_code`) to the API, whose one table
    (`app.failures`) gives each code its HTTP status."""

    # The client can fix these: another video, a shorter conversation, other parameters.
    VIDEO_UNREADABLE = "video_unreadable"  # a video failed to decode for a reason without its own code
    CORRUPT_VIDEO = "corrupt_video"  # the codes of model.video's typed errors, kept as they are
    NO_VIDEO_STREAM = "no_video_stream"
    VIDEO_TOO_LONG = "video_too_long"
    RESOLUTION_TOO_LARGE = "resolution_too_large"
    ZERO_FRAMES = "zero_frames"
    CONTEXT_TOO_LONG = "context_too_long"
    BAD_SAMPLING = "bad_sampling"
    # The service's fault.
    VIDEO_MISSING = "video_missing"  # a stored video is gone from disk: a storage fault
    ENGINE_ERROR = "engine_error"
    ENGINE_OVERLOADED = "engine_overloaded"  # out of memory: retry later or with less
    EXPIRED = "expired"  # no worker took the request before its deadline
    WORKER_LOST = "worker_lost"  # the workers serving it died too often


class RequestError(Exception):
    """One request cannot be served; `code` says why, the message what to do next."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class EngineError(RuntimeError):
    """The engine failed a request for a reason that is not the client's fault."""


class EngineUnavailable(EngineError):
    """The engine cannot run here (e.g. vLLM or a GPU is missing); the message says why."""


class EngineUnhealthy(EngineError):
    """`check_health` found the engine unable to serve."""


class VideoInputError(RequestError, ValueError):
    """A request's video could not be read; `code` is the video error's own code, or
    `video_missing` when the stored file is gone."""

    def __init__(self, message: str, code: FailureCode = FailureCode.VIDEO_UNREADABLE) -> None:
        super().__init__(code, message)


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    videos: tuple[str, ...] = ()  # video ids shown in this (user) turn, in order


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    turns: tuple[Turn, ...]
    sampling: SamplingParams = SamplingParams()
    # video id -> local file path, for every id any turn references
    video_paths: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationResult:
    request_id: str
    text: str  # the reply with caption tags removed
    raw_text: str  # the reply exactly as generated
    captions: tuple[str, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    error: str | None = None
    error_code: FailureCode | None = None  # set when finish_reason is "error"

    @classmethod
    def failed(cls, request_id: str, error: RequestError, prompt_tokens: int = 0) -> GenerationResult:
        """The result of a request that failed alone (its batch neighbours still run)."""
        return cls(request_id, "", "", (), prompt_tokens, 0, "error", error=str(error),
                   error_code=error.code)


# Called with (request_id, text_delta) as tokens are decoded; for streaming.
DeltaCallback = Callable[[str, str], None]


class Engine(Protocol):
    def generate(
        self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
    ) -> list[GenerationResult]:
        """Run a batch of requests together; one result per request, in order."""
        ...

    def abort(self, request_id: str) -> bool:
        """Stop a running request (its result ends with finish_reason 'abort')."""
        ...

    def check_health(self) -> None:
        """Raise `EngineUnhealthy` if the engine cannot serve."""
        ...

    def shutdown(self) -> None: ...


class AsyncEngine(Protocol):
    """Per-request async face of an engine, used by the LLM worker.

    vLLM implements it natively (continuous batching). A batch `Engine` gets it from
    `model.engine.batching.BatchingEngine`, which batches whatever is pending.
    """

    async def submit(
        self, request: GenerationRequest, on_delta: DeltaCallback | None = None
    ) -> GenerationResult: ...

    async def abort(self, request_id: str) -> bool: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...
