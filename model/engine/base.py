"""The engine interface the LLM worker talks to, and the types that cross it.

Two implementations: `hf` (transformers, CPU or GPU; `model.engine.hf_engine`) and
`vllm` (GPU only; `model.engine.vllm_engine`). Both take the same requests and return
the same results, so the worker and the API never know which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "abort", "error"]


class EngineError(RuntimeError):
    """The engine failed a request for a reason that is not the client's fault."""


class EngineUnavailable(EngineError):
    """The engine cannot run here (e.g. vLLM or a GPU is missing); the message says why."""


class EngineUnhealthy(EngineError):
    """`check_health` found the engine unable to serve."""


class VideoInputError(ValueError):
    """A request's video could not be read; carries the video id."""


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
