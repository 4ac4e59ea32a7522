"""Pick the LLM worker's engine from settings: ENGINE=hf (default) or ENGINE=vllm.

Both engines are imported lazily: the hf path never imports vLLM, and the vllm path
fails fast with `EngineUnavailable` (what is missing and what to do) when vLLM or a
GPU is not there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from model.engine.base import AsyncEngine
from model.engine.feature_store import DiskFeatureStore, FeatureStore
from model.video.sampling import SamplingOptions

if TYPE_CHECKING:
    from gpt4video.settings import Settings
    from model.network import GPT4VideoModel

log = logging.getLogger(__name__)


def sampling_options(settings: Settings) -> SamplingOptions:
    """VIDEO_SAMPLING, VIDEO_KEYFRAME_TOLERANCE_S and VIDEO_DECODE_THREADS."""
    return SamplingOptions(settings.video_sampling, settings.video_keyframe_tolerance_s,
                           settings.video_decode_threads)


def feature_store(settings: Settings) -> FeatureStore | None:
    """The video-feature store the LLM workers share (None: FEATURE_STORE_MAX_MB=0)."""
    if settings.feature_store_max_mb == 0:
        return None
    root = settings.feature_store_dir or settings.data_dir / "features"
    log.info("shared video features under %s (at most %d MB)", root, settings.feature_store_max_mb)
    return DiskFeatureStore(root, settings.feature_store_max_mb * 1024 * 1024)


def build_engine(
    settings: Settings, model: GPT4VideoModel, checkpoint_dir: Path | None = None
) -> AsyncEngine:
    """The async engine for `settings.engine`, serving `model` (from `load_checkpoint`).

    `checkpoint_dir`: where `model` was loaded from; the vllm engine loads the LLM and the
    adapter from there itself (default: `model.checkpoint_dir`).
    """
    if settings.engine == "vllm":
        from model.engine.vllm_engine import VllmEngine, VllmOptions, require_vllm

        require_vllm()  # before anything heavy: a clear error on a CPU box
        log.info("engine: vllm")
        return VllmEngine.from_model(model, VllmOptions.from_settings(settings), checkpoint_dir,
                                     feature_store=feature_store(settings), sampling=sampling_options(settings))
    if settings.engine == "hf":
        from model.engine.batching import BatchingEngine
        from model.engine.hf_engine import HFEngine

        log.info("engine: hf (max batch %d)", settings.llm_max_batch)
        return BatchingEngine(
            HFEngine(model, feature_cache_size=settings.feature_cache_size,
                     feature_store=feature_store(settings), sampling=sampling_options(settings)),
            max_batch=settings.llm_max_batch,
        )
    raise ValueError(f"ENGINE={settings.engine!r} is not one of 'hf', 'vllm'")
