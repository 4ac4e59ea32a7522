"""Typed request and response bodies. Requests carry their bounds and convert themselves
into the wire/engine parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpt4video import llm_protocol as wire
from gpt4video.jobs import JobStatus, VideoParams

VIDEO_ID_PATTERN = r"^[0-9a-f]{64}$"


class SamplingFields(BaseModel):
    max_new_tokens: int = Field(default=128, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=4)

    def to_wire(self) -> wire.WireSampling:
        return wire.WireSampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                 top_p=self.top_p, seed=self.seed, stop=[s for s in self.stop if s])


class VideoGenerationFields(BaseModel):
    """Optional parameters for the videos generated from the reply's captions."""

    model_config = ConfigDict(extra="forbid")
    num_frames: int | None = Field(default=None, ge=1, le=256)
    height: int | None = Field(default=None, ge=16, le=2048)
    width: int | None = Field(default=None, ge=16, le=2048)
    fps: int | None = Field(default=None, ge=1, le=60)
    num_inference_steps: int | None = Field(default=None, ge=1, le=200)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    negative_prompt: str | None = Field(default=None, max_length=500)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)

    def to_params(self) -> VideoParams:
        return VideoParams(**self.model_dump())


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=8000)
    videos: list[str] = Field(default_factory=list, max_length=8,
                              description="ids returned by POST /v1/videos (user messages only)")


class ChatRequest(SamplingFields):
    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(min_length=1, max_length=64)
    stream: bool = False
    video: VideoGenerationFields = Field(default_factory=VideoGenerationFields)


class VideoJobRef(BaseModel):
    caption: str
    job_id: str
    status: JobStatus
    status_url: str


class SafetyInfo(BaseModel):
    category: str
    score: float


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ChatResponse(BaseModel):
    id: str
    message: AssistantMessage
    captions: list[str]
    videos: list[VideoJobRef]
    withheld: list[SafetyInfo] = Field(default_factory=list, description="captions blocked by the safety policy")
    refusal: SafetyInfo | None = None
    finish_reason: str
    usage: Usage


class VideoInfoOut(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    frame_count: int | None


class VideoUploadResponse(BaseModel):
    id: str
    bytes: int
    info: VideoInfoOut
    created: bool = Field(description="false when the same bytes were already stored")


class JobProgress(BaseModel):
    step: int
    total: int


class JobVideoResult(BaseModel):
    url: str
    caption: str
    frames: int
    fps: float
    duration_s: float
    width: int | None = None
    height: int | None = None
    seed: int | None = None


class JobError(BaseModel):
    type: str
    message: str
    code: str


class JobResponse(BaseModel):
    id: str
    status: JobStatus
    caption: str
    progress: JobProgress
    result: JobVideoResult | None = None
    error: JobError | None = None
    created_at: float
    updated_at: float
