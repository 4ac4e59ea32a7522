"""The `vllm` engine: vLLM's `AsyncLLM` serving the checkpoint's LLaMA + LoRA on a GPU.

Per request, in order:

1. The worker's `GPT4VideoModel` (vision tower, abstractor and the base LLM's input
   embedding table, on the same GPU) turns the conversation into prompt embeddings
   `(L, D_llm)`: text tokens embedded, each video's abstractor tokens spliced in.
2. They go to vLLM as `{"prompt_embeds": tensor}` with a `LoRARequest` for the
   checkpoint's adapter; vLLM holds its own copy of the base LLM (loaded from the
   checkpoint's `llm/` directory) and batches all running requests continuously.
3. Text streams back by deltas (`RequestOutputKind.DELTA`); the reply is parsed for
   caption tags exactly as the `hf` engine does.

vLLM is an optional dependency (`pip install .[gpu]`); it is imported lazily, and
`require_vllm` raises `EngineUnavailable` with what to do when it or a GPU is missing.

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
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

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
from model.engine.inputs import RequestInputs, check_context
from model.tags import parse_reply

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


class AdapterConfigError(ValueError):
    """The checkpoint's LoRA adapter is one vLLM cannot serve; the message says why."""


# -- availability ---------------------------------------------------------------------------


def require_vllm() -> None:
    """Raise `EngineUnavailable` unless vLLM is installed and torch sees a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        raise EngineUnavailable(
            "ENGINE=vllm needs the 'vllm' package, which is not installed here. Install the "
            "GPU extra on a CUDA machine (`pip install .[gpu]`), use the GPU image "
            "(docker/Dockerfile.gpu), or set ENGINE=hf to serve with transformers."
        )
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            "ENGINE=vllm needs a CUDA GPU, but torch.cuda.is_available() is False. Run the "
            "llm-worker on a GPU host with the NVIDIA driver (docker: GPU reservation or "
            "`--gpus all`), or set ENGINE=hf to serve on the CPU."
        )


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VllmOptions:
    """vLLM engine options; `from_settings` maps the VLLM_* settings onto them."""

    gpu_memory_utilization: float = 0.85  # share of the GPU vLLM may take (weights + KV cache)
    max_model_len: int = 4096  # prompt (text + video tokens) + reply, in tokens
    max_num_seqs: int = 64  # requests decoded together
    dtype: str = "auto"  # "auto": fp16 for an fp32 checkpoint (vLLM's LoRA kernels need 16 bit)
    tensor_parallel_size: int = 1
    request_timeout_s: float | None = 120.0  # None: no limit; on expiry the request is aborted
    feature_cache_size: int = 256  # videos whose features stay cached
    enforce_eager: bool = False  # True: no CUDA graphs (faster start; tests)
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
        lora_request: Any,  # vllm.lora.request.LoRARequest
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
        cls, model: GPT4VideoModel, options: VllmOptions, checkpoint_dir: Path | None = None
    ) -> VllmEngine:
        """The worker's path: vLLM loads the checkpoint's LLM + adapter, the model embeds."""
        require_vllm()
        files = VllmModelFiles.of_model(model, checkpoint_dir)
        if model.device.type != "cuda":
            log.warning("the GPT4VideoModel is on %s: prompt embeddings will be computed there "
                        "(set DEVICE=cuda to compute them on the GPU)", model.device)
        embedder = RequestInputs.for_model(model, options.feature_cache_size)
        return cls.start(files, embedder, options, eos_token_id=model.tokenizer.eos_token_id)

    @classmethod
    def start(
        cls,
        files: VllmModelFiles,
        embedder: PromptEmbedder,
        options: VllmOptions,
        eos_token_id: int | None = None,
    ) -> VllmEngine:
        """Start vLLM on `files.llm_dir`, preload the adapter, and return the engine."""
        require_vllm()
        max_rank = adapter_max_lora_rank(files.lora_dir)
        # Our process holds a CUDA context and extra threads: fork is unsafe, spawn is not.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")

        from vllm import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=str(files.llm_dir),
            tokenizer=str(files.llm_dir),
            enable_prompt_embeds=True,
            enable_lora=True,
            max_lora_rank=max_rank,
            max_loras=1,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=fit_max_model_len(files.llm_dir, options.max_model_len),
            max_num_seqs=options.max_num_seqs,
            dtype=options.dtype,
            tensor_parallel_size=options.tensor_parallel_size,
            enforce_eager=options.enforce_eager,
            seed=options.seed,
        )
        lora = LoRARequest(lora_name=_LORA_NAME, lora_int_id=_LORA_ID, lora_path=str(files.lora_dir))
        loop = _LoopThread("vllm-engine")

        async def boot() -> Any:
            llm = AsyncLLM.from_engine_args(args)  # inside the loop: output handler binds here
            try:
                await llm.add_lora(lora)  # a bad adapter fails now, not on the first request
            except BaseException:
                llm.shutdown()
                raise
            return llm

        try:
            llm = loop.call(boot())
        except Exception as exc:
            loop.stop()
            raise EngineUnavailable(
                f"vLLM could not start on {files.llm_dir} with adapter {files.lora_dir}: {exc}. "
                "Check VLLM_GPU_MEMORY_UTILIZATION (free GPU memory), VLLM_MAX_MODEL_LEN (at most "
                "the model's max_position_embeddings) and VLLM_DTYPE."
            ) from exc
        log.info("vLLM engine up: %s + LoRA %s (max rank %d)", files.llm_dir, files.lora_dir, max_rank)
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
        `use_adapter=False` serves the base LLM alone (A/B checks of the adapter).
        """
        self._check_open()
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
