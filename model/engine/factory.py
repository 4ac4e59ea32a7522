"""Pick the LLM worker's engine from settings: ENGINE=auto (default), hf or vllm.

`auto` is vllm where vLLM is installed and has a device to run on (a CUDA GPU, or the CPU
with vLLM's CPU backend: the GPU image, .venv-vllm), else hf, so a box without vLLM still
serves and one with it gets the faster engine with nothing to set (`resolve_engine`).
Both engines are imported lazily: the hf path never imports vLLM, and ENGINE=vllm fails
fast with `EngineUnavailable` (what is missing and what to do) when vLLM or a device for
it is not there.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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


def resolve_engine(settings: Settings) -> Literal["hf", "vllm"]:
    """The engine ENGINE names; for `auto`, vllm when `require_vllm` passes, else hf."""
    if settings.engine != "auto":
        return settings.engine
    if importlib.util.find_spec("vllm") is None:
        log.info("ENGINE=auto: hf (vLLM is not installed here)")
        return "hf"
    from model.engine.base import EngineUnavailable
    from model.engine.vllm_engine import require_vllm

    try:
        require_vllm()
    except EngineUnavailable as exc:
        log.warning("ENGINE=auto: hf, as vLLM cannot run here: %s", exc)
        return "hf"
    log.info("ENGINE=auto: vllm (installed, with a device)")
    return "vllm"


def build_engine(
    settings: Settings, model: GPT4VideoModel, checkpoint_dir: Path | None = None
) -> AsyncEngine:
    """The async engine for `settings.engine` (`resolve_engine`), serving `model` (from `load_checkpoint`).

    `checkpoint_dir`: where `model` was loaded from; the vllm engine loads the LLM and the
    adapter from there itself (default: `model.checkpoint_dir`).
    """
    engine = resolve_engine(settings)
    if engine == "vllm":
        from model.engine.vllm_engine import VllmEngine, VllmOptions, require_vllm

        require_vllm()  # before anything heavy: a clear error on a CPU box
        log.info("engine: vllm")
        return VllmEngine.from_model(model, VllmOptions.from_settings(settings), checkpoint_dir,
                                     feature_store=feature_store(settings), sampling=sampling_options(settings))
    if engine == "hf":
        from model.engine.batching import BatchingEngine
        from model.engine.hf_engine import HFEngine

        log.info("engine: hf (max batch %d)", settings.llm_max_batch)
        return BatchingEngine(
            HFEngine(model, feature_cache_size=settings.feature_cache_size,
                     feature_store=feature_store(settings), sampling=sampling_options(settings)),
            max_batch=settings.llm_max_batch,
        )
    raise ValueError(f"ENGINE={settings.engine!r} is not one of 'hf', 'vllm'")
