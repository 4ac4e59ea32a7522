"""One `Settings` object shared by every process (api, llm-worker, t2v-worker, CLI).

Values come from the environment (or a `.env` file). Startup fails fast with a
message naming the bad setting; see `load_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names it and says what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # --- wiring -----------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    data_dir: Path = Path("data")
    # Checkpoint directory for the LLM worker. Empty: the local default checkpoint
    # (the bundled trained one if present, else a tiny random one built on first use).
    model_dir: Path | None = None
    # Diffusers pipeline directory for the t2v worker. Empty: the trained shapes pipeline
    # shipped in model/checkpoints/t2v-shapes (else a tiny random one built under DATA_DIR).
    t2v_model_dir: Path | None = None
    # Named base LLMs a checkpoint may rest on (`gpt4video build-base`). Empty: DATA_DIR/models/bases.
    bases_dir: Path | None = None
    # Trained text-moderation head; empty: the one shipped in the package.
    safety_head_path: Path | None = None
    safety_enabled: bool = True
    # Per-category overrides of the shipped thresholds, as JSON: {"weapons_illegal": 0.6}.
    safety_thresholds: dict[str, float] = Field(default_factory=dict)
    # Per-category cosine thresholds of the CLIP frame check (uncalibrated defaults).
    safety_frame_thresholds: dict[str, float] = Field(default_factory=dict)

    # --- api --------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Comma-separated bearer keys. Empty: no authentication (every caller is "anonymous").
    api_keys: str = ""
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_video_seconds: float = Field(default=600.0, gt=0)
    max_video_pixels: int = Field(default=3840 * 2160, ge=1)
    probe_timeout_s: float = Field(default=20.0, gt=0)
    probe_memory_mb: int = Field(default=1024, ge=64)
    max_messages: int = Field(default=64, ge=1)
    max_prompt_chars: int = Field(default=8000, ge=1)
    # The most tokens a request may ask a reply to have (max_new_tokens, max_tokens).
    max_new_tokens_limit: int = Field(default=2048, ge=1, le=2048)
    max_pending_llm_requests: int = Field(default=256, ge=1)
    # The model id of the OpenAI-compatible routes (GET /v1/models; a request's "model").
    served_model_name: str = Field(default="gpt4video", min_length=1)
    # Bearer token for GET /metrics. Without API_KEYS /metrics is open; with API_KEYS it
    # answers only this token (none set: /metrics is closed).
    metrics_token: str = ""

    # --- llm worker -------------------------------------------------------------------
    # "auto": vllm where vLLM is installed and has a device (the GPU image, .venv-vllm from
    # `make vllm-env`), else hf; the LLM worker decides at start (model.engine.factory.resolve_engine).
    # On this project's 2-core CPU the merged vllm engine served the real base 1.7-2.7x faster.
    engine: Literal["auto", "hf", "vllm"] = "auto"
    device: str = "cpu"
    llm_request_timeout_s: float = Field(default=120.0, gt=0)
    llm_max_batch: int = Field(default=16, ge=1)
    # How long a request may sit claimed by a silent worker before another takes it.
    llm_claim_idle_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    heartbeat_ttl_s: float = Field(default=10.0, gt=0)
    # How often a worker runs its engine's check_health, and how long one check may take;
    # a worker whose engine fails it leaves the pool and exits (a supervisor restarts it).
    llm_health_interval_s: float = Field(default=10.0, gt=0)
    llm_health_timeout_s: float = Field(default=30.0, gt=0)
    feature_cache_size: int = Field(default=256, ge=0)
    # Which frames a video is sampled at: "exact" (the frame on screen at each uniform
    # timestamp) or "keyframe" (the nearest keyframe within VIDEO_KEYFRAME_TOLERANCE_S and
    # half a segment: one decoded frame instead of a GOP; model.video.keyframes).
    video_sampling: Literal["exact", "keyframe"] = "exact"
    video_keyframe_tolerance_s: float = Field(default=1.0, ge=0)
    # Decoder threads a video: 0 lets FFmpeg pick (one per core), 1 decodes in the caller.
    video_decode_threads: int = Field(default=0, ge=0)
    # Video features every LLM worker shares, on disk, least recently used evicted first.
    # Empty: DATA_DIR/features. FEATURE_STORE_MAX_MB=0 turns the shared store off.
    feature_store_dir: Path | None = None
    feature_store_max_mb: int = Field(default=2048, ge=0)
    # Encode an uploaded video's features in the background (an LLM worker), before its
    # first question arrives.
    precompute_features: bool = False
    vllm_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    vllm_max_model_len: int = Field(default=4096, ge=64)
    vllm_max_num_seqs: int = Field(default=64, ge=1)
    vllm_dtype: str = "auto"
    vllm_tensor_parallel_size: int = Field(default=1, ge=1)
    # True: no CUDA graphs / torch.compile warm-up: a faster start, a slower decode (tests).
    vllm_enforce_eager: bool = False
    # How vLLM applies the checkpoint's LoRA. "merged": merged into a copy of the base once
    # (cached under DATA_DIR/models/vllm-merged); vLLM runs without LoRA, so vLLM issue 51122
    # and PR 48421 are out of reach, and it decodes fastest. "lora": vLLM's LoRA kernels plus
    # the fixes of the vllm_plugin/ plugin; also serves base-model requests (A/B checks).
    vllm_lora_mode: Literal["merged", "lora"] = "merged"
    # vLLM's CPU backend only: GiB of RAM for its KV cache (vLLM's own variable, same name).
    vllm_cpu_kvcache_space: int = Field(default=2, ge=1)

    # --- video jobs -------------------------------------------------------------------
    t2v_job_timeout_s: int = Field(default=600, ge=1)
    t2v_job_retries: int = Field(default=1, ge=0)
    t2v_result_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    job_record_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    t2v_device: str = "cpu"
    t2v_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    t2v_cpu_offload: bool = False
    t2v_vae_slicing: bool = False
    t2v_vae_tiling: bool = False
    # Output frame check: "module:factory" returning a model.safety.base.FrameChecker.
    # Default: the CLIP of the configured LLM checkpoint, active when it is a pretrained
    # CLIP. Empty: PassThroughFrameChecker (flags nothing, reports itself inactive).
    t2v_frame_checker: str = "model.safety.from_checkpoint:from_settings"
    t2v_safety_sample_frames: int = Field(default=8, ge=1)
    # A running job's RQ registry entry lives this long without a heartbeat from its
    # worker; after that a worker's maintenance (or the API's reconcile) retries or fails it.
    t2v_heartbeat_ttl_s: int = Field(default=30, ge=2)
    # How often an idle t2v worker cleans RQ registries (finds abandoned jobs).
    t2v_maintenance_interval_s: int = Field(default=30, ge=1)

    # --- data lifecycle (issue 17) -----------------------------------------------------
    # An upload is kept this long after its last upload (0: until its owners delete it);
    # a generated MP4, and its job record, this long after it was written (0: forever).
    video_retention_s: int = Field(default=30 * 24 * 3600, ge=0)
    output_retention_s: int = Field(default=7 * 24 * 3600, ge=0)
    # The API's reaper: a pass every REAPER_INTERVAL_S, looking at no more than
    # REAPER_MAX_FILES files; temporaries older than TMP_MAX_AGE_S are orphans.
    reaper_interval_s: float = Field(default=60.0, gt=0)
    reaper_max_files: int = Field(default=2000, ge=1)
    tmp_max_age_s: int = Field(default=3600, ge=1)
    # Uploads are refused (507) past DISK_MAX_BYTES stored under DATA_DIR (0: no cap) or
    # with less than DISK_MIN_FREE_BYTES free on its filesystem.
    disk_max_bytes: int = Field(default=0, ge=0)
    disk_min_free_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    # --- per-key limits (0: no limit) -------------------------------------------------
    key_max_concurrent_llm: int = Field(default=16, ge=0)
    key_max_active_jobs: int = Field(default=32, ge=0)
    key_upload_bytes_per_day: int = Field(default=0, ge=0)

    # --- graceful stop ----------------------------------------------------------------
    # After SIGTERM the API finishes in-flight requests for this long, then closes them.
    api_grace_s: float = Field(default=30.0, gt=0)
    # `gpt4video up` starts its own redis-server (AOF, appendfsync everysec, under
    # DATA_DIR/redis) on this port unless REDIS_URL is set.
    managed_redis_port: int = Field(default=6390, ge=1, le=65535)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise `SettingsError` naming each bad key."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
