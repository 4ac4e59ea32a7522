"""The one table from a model failure (`FailureCode`) to its HTTP answer.

A failure is a 4xx only when the client can fix it (another video, a shorter
conversation, other parameters); the service's own faults are 5xx.
"""

from __future__ import annotations

from app.errors import APIError, GatewayTimeout, InternalError, ServiceUnavailable, Unprocessable
from gpt4video import llm_protocol as wire
from model.engine.base import FailureCode

# code -> (error class, message when the reply carries none, extra headers)
FAILURES: dict[FailureCode, tuple[type[APIError], str, dict[str, str] | None]] = {
    FailureCode.VIDEO_UNREADABLE: (Unprocessable, "a video could not be read; upload another", None),
    FailureCode.CORRUPT_VIDEO: (Unprocessable, "a video is corrupt; re-encode it and upload it again", None),
    FailureCode.NO_VIDEO_STREAM: (Unprocessable, "a video has no picture track; upload another", None),
    FailureCode.VIDEO_TOO_LONG: (Unprocessable, "a video is too long; upload a shorter one", None),
    FailureCode.RESOLUTION_TOO_LARGE: (Unprocessable, "a video's resolution is too large; downscale it", None),
    FailureCode.ZERO_FRAMES: (Unprocessable, "a video holds no frame; upload another", None),
    FailureCode.CONTEXT_TOO_LONG: (Unprocessable, "the conversation is longer than the model's context", None),
    FailureCode.BAD_SAMPLING: (Unprocessable, "the engine rejected the sampling parameters", None),
    FailureCode.VIDEO_MISSING: (InternalError, "a stored video is missing on the server; upload it again", None),
    FailureCode.ENGINE_ERROR: (InternalError, "the model failed; the error has been logged", None),
    FailureCode.ENGINE_OVERLOADED: (ServiceUnavailable, "the model is out of memory; retry shortly",
                                    {"Retry-After": "5"}),
    FailureCode.EXPIRED: (GatewayTimeout, "the request waited too long for an LLM worker; retry", None),
    FailureCode.WORKER_LOST: (GatewayTimeout, "the LLM workers serving the request were lost; retry", None),
}


def failure_error(code: FailureCode, message: str | None = None) -> APIError:
    error_cls, default_message, headers = FAILURES[code]
    return error_cls(message or default_message, str(code), headers)


def raise_for_reply(reply: wire.LLMReply) -> None:
    """Raise the API error for a failed reply; return for an answered one."""
    if reply.status in ("error", "expired"):
        raise failure_error(reply.error_code or FailureCode.ENGINE_ERROR, reply.error)
