"""Requests -> model inputs: the part both engines share.

Referenced videos -> features (decoded in the configured sampling mode, encoded and
cached by content and the encoder's weights fingerprint, per process and optionally in a
store every worker shares; `model.engine.video_features`) -> a token sequence
(the hf engine) or prompt embeddings (the vllm engine). Failures are typed: a video that
cannot be read is a `VideoInputError` carrying its own code, a prompt the model's
context cannot hold a `RequestError` with `context_too_long`. Anything else (out of
memory, a bug) is not the request's fault and propagates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from model.engine.base import FailureCode, GenerationRequest, RequestError, VideoInputError
from model.engine.feature_store import FeatureStore
from model.engine.video_features import FeatureCache, FrameSampler, VideoFeatureExtractor, encoder_fingerprint
from model.video.errors import VideoError, VideoNotFound
from model.video.sampling import SamplingOptions

if TYPE_CHECKING:
    from model.network import GPT4VideoModel, SequenceInputs

log = logging.getLogger(__name__)

Features = dict[str, torch.Tensor]  # video id -> (Nq, D_llm)

# What reading one video may raise: typed video errors, and the OS errors of a sampler.
_VIDEO_READ_ERRORS = (VideoError, OSError)


def video_sampler(options: SamplingOptions = SamplingOptions()) -> FrameSampler:
    """The frame sampler of the engines: `model.video.sample_frames` with `options`."""
    from model.video import sample_frames

    def sample(path: str, n: int, size: int):
        return sample_frames(path, n, size=size, options=options)  # (n, size, size, 3)

    return sample


def referenced_videos(request: GenerationRequest) -> dict[str, str]:
    """Video id -> path for every video the turns show, in order of first mention."""
    ids = dict.fromkeys(v for turn in request.turns for v in turn.videos)
    missing = [v for v in ids if v not in request.video_paths]
    if missing:  # the API resolves every id it accepts: this is the service's fault
        raise VideoInputError(f"video {missing[0]} has no path in the request", FailureCode.VIDEO_MISSING)
    return {v: request.video_paths[v] for v in ids}


def video_failure(video_id: str, exc: Exception) -> VideoInputError:
    """The typed failure of reading one video: its own code where it has one."""
    if isinstance(exc, VideoNotFound | FileNotFoundError):
        return VideoInputError(
            f"video {video_id} is missing from the video store ({exc}); the server lost the "
            "file: upload the video again", FailureCode.VIDEO_MISSING)
    code = getattr(exc, "code", None)
    known = code in FailureCode.__members__.values()
    return VideoInputError(f"video {video_id} could not be read: {exc}",
                           FailureCode(code) if known else FailureCode.VIDEO_UNREADABLE)


def check_context(prompt_tokens: int, limit: int, how_to_raise: str) -> None:
    """Raise `context_too_long` unless the prompt leaves room for one generated token."""
    if prompt_tokens >= limit:
        raise RequestError(FailureCode.CONTEXT_TOO_LONG, (
            f"the prompt is {prompt_tokens} tokens (text + video tokens) and the model's context "
            f"is {limit} tokens: shorten the conversation, send fewer videos, or {how_to_raise}"))


class RequestInputs:
    """Turns requests into what the model takes, with the video features cached."""

    def __init__(self, model: GPT4VideoModel, features: VideoFeatureExtractor) -> None:
        self.model = model
        self.features = features

    @classmethod
    def for_model(
        cls,
        model: GPT4VideoModel,
        cache_size: int,
        sampler: FrameSampler | None = None,
        fingerprint: str | None = None,
        store: FeatureStore | None = None,
        sampling: SamplingOptions = SamplingOptions(),
    ) -> RequestInputs:
        """`sampler`: frames for the encoder (default: `video_sampler(sampling)`). `fingerprint`:
        the encoder's identity in cache keys (default: config + weights + sampling mode).
        `store`: the shared store behind the per-process LRU; a custom sampler (tests)
        shares it only under an explicit fingerprint, so made-up frames never reach it."""
        config = getattr(model, "config", None)
        shareable = fingerprint is not None or sampler is None
        if fingerprint is None and config is not None:
            fingerprint = (encoder_fingerprint(model, config.fingerprint(), sampling.key()) if shareable
                           else config.fingerprint())
        shared = store if shareable and fingerprint is not None else None
        if store is not None and shared is None:
            log.warning("not sharing video features: this engine has a custom frame sampler or no config")
        extractor = VideoFeatureExtractor(model, fingerprint or "uncached", FeatureCache(cache_size),
                                          sampler or video_sampler(sampling), shared)
        return cls(model, extractor)

    def batch_features(self, requests: Sequence[GenerationRequest]) -> list[Features | VideoInputError]:
        """Each request's video features, encoded together; a request whose video cannot
        be read gets its failure, and its neighbours still get their features."""
        wanted: list[dict[str, str] | VideoInputError] = []
        for request in requests:
            try:
                wanted.append(referenced_videos(request))
            except VideoInputError as exc:
                wanted.append(exc)
        readable = [w for w in wanted if isinstance(w, dict)]
        merged = {k: v for w in readable for k, v in w.items()}
        # Each request sees only its own videos: never a neighbour's file under the same id,
        # so a batch gives what each request alone gives.
        if all(merged[k] == v for w in readable for k, v in w.items()):
            try:
                encoded = self.features.features(merged)
                return [w if isinstance(w, VideoInputError) else {k: encoded[k] for k in w} for w in wanted]
            except _VIDEO_READ_ERRORS:
                pass  # isolate the bad video below: one at a time (cached ones are free)
        return [w if isinstance(w, VideoInputError) else self._features_alone(w) for w in wanted]

    def _features_alone(self, videos: dict[str, str]) -> Features | VideoInputError:
        features: Features = {}
        for video_id, path in videos.items():
            try:
                features.update(self.features.features({video_id: path}))
            except _VIDEO_READ_ERRORS as exc:
                return video_failure(video_id, exc)
        return features

    def sequence(self, request: GenerationRequest, features: Features) -> SequenceInputs:
        """The prompt as tokens with the video positions marked (the hf engine's input)."""
        return self.model.build_sequence(request.turns, features, add_generation_prompt=True)

    @torch.inference_mode()
    def __call__(self, request: GenerationRequest) -> torch.Tensor:
        """The prompt as embeddings `(L, D_llm)` (the vllm engine's input); raises `VideoInputError`."""
        [features] = self.batch_features([request])
        if isinstance(features, VideoInputError):
            raise features
        return self.model.prompt_embeds(request.turns, features)  # (L, D_llm)
