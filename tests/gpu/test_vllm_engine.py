"""The vllm engine against the hf engine on the same tiny checkpoint (GPU + vLLM only).

Skipped cleanly where vLLM is not installed or torch sees no CUDA GPU. Both engines run
the LLM in float16 (vLLM's LoRA kernels need 16-bit weights; the hf engine is loaded
in float16 so both compute in the same precision) and decode greedily, so their text
must be identical: with and without a video, with the adapter applied. The adapter
must change the output (the tiny adapter's B matrices are random, not zero).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install .[gpu])")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from model.checkpoint import load_checkpoint  # noqa: E402
from model.engine.base import (  # noqa: E402
    EngineError,
    EngineUnhealthy,
    FailureCode,
    GenerationRequest,
    SamplingParams,
    Turn,
)
from model.engine.hf_engine import HFEngine  # noqa: E402
from model.engine.inputs import RequestInputs  # noqa: E402
from model.engine.vllm_engine import (  # noqa: E402
    VllmEngine,
    VllmModelFiles,
    VllmOptions,
)
from model.tiny import build_tiny_checkpoint  # noqa: E402
from tests.media import make_video  # noqa: E402
from tests.waiting import eventually  # noqa: E402

PROMPTS = (
    "Describe the video.",
    "What happens in the video?",
    "Show me a red circle that moves to the left.",
    "How many objects? What colour is it?",
)
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)
    config_file = path / "gpt4video.json"
    config = json.loads(config_file.read_text())
    config["llm"]["dtype"] = "float16"  # the hf engine computes in vLLM's precision
    config_file.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    return load_checkpoint(checkpoint, device="cuda")


@pytest.fixture(scope="module")
def vllm_engine(model, checkpoint: Path):
    options = VllmOptions(
        gpu_memory_utilization=0.3, max_model_len=1024, max_num_seqs=32, dtype="float16",
        enforce_eager=True, request_timeout_s=None,
    )
    engine = VllmEngine.start(
        VllmModelFiles.of_model(model, checkpoint),
        RequestInputs.for_model(model, cache_size=16),
        options,
        eos_token_id=model.tokenizer.eos_token_id,
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_engine(model) -> HFEngine:
    return HFEngine(model)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    path = make_video(tmp_path_factory.mktemp("videos") / "clip.mp4", frames=16)
    return hashlib.sha256(path.read_bytes()).hexdigest(), str(path)


def _request(request_id: str, text: str, max_new_tokens: int = MAX_NEW_TOKENS, *,
             video: tuple[str, str] | None = None, **sampling) -> GenerationRequest:
    videos = (video[0],) if video else ()
    return GenerationRequest(
        request_id=request_id,
        turns=(Turn("user", text, videos),),
        sampling=SamplingParams(max_new_tokens=max_new_tokens, **sampling),
        video_paths=dict([video]) if video else {},
    )


def _comparable(result) -> tuple:
    return (result.raw_text, result.finish_reason, result.prompt_tokens, result.completion_tokens)


def _generate(engine: VllmEngine, requests) -> list:
    """Run requests together on the engine, from synchronous test code."""
    async def run_all() -> list:
        return list(await asyncio.gather(*(engine.submit(r) for r in requests)))

    return asyncio.run(run_all())


def _hf_one_by_one(hf_engine: HFEngine, requests) -> list:
    return [hf_engine.generate([r])[0] for r in requests]  # no padding: exact reference


# -- parity ------------------------------------------------------------------------------------


def test_greedy_text_matches_hf(vllm_engine, hf_engine):
    requests = [_request(f"text-{i}", p) for i, p in enumerate(PROMPTS)]
    from_vllm = _generate(vllm_engine, requests)
    from_hf = _hf_one_by_one(hf_engine, requests)
    assert [r.request_id for r in from_vllm] == [r.request_id for r in requests]
    assert any(r.completion_tokens > 0 for r in from_hf), "the reference generated nothing"
    assert [_comparable(r) for r in from_vllm] == [_comparable(r) for r in from_hf]


def test_greedy_with_video_matches_hf(vllm_engine, hf_engine, video, model):
    requests = [_request(f"video-{i}", p, video=video) for i, p in enumerate(PROMPTS[:2])]
    from_vllm = _generate(vllm_engine, requests)
    from_hf = _hf_one_by_one(hf_engine, requests)
    text_only = _generate(vllm_engine, [_request("plain", PROMPTS[0])])[0]
    assert from_vllm[0].prompt_tokens == text_only.prompt_tokens + model.num_video_tokens
    assert all(r.error is None for r in from_vllm), [r.error for r in from_vllm]
    assert [_comparable(r) for r in from_vllm] == [_comparable(r) for r in from_hf]


def test_the_adapter_is_applied_and_changes_the_output(vllm_engine, hf_engine, model):
    requests = [_request(f"ab-{i}", p) for i, p in enumerate(PROMPTS)]

    async def both():
        with_lora = [await vllm_engine.submit(r) for r in requests]
        base = [await vllm_engine.submit(r, use_adapter=False) for r in requests]
        return with_lora, base

    with_lora, base = asyncio.run(both())
    assert [r.raw_text for r in with_lora] != [r.raw_text for r in base]
    with model.llm.disable_adapter():  # the hf reference without the adapter
        hf_base = _hf_one_by_one(hf_engine, requests)
    assert [_comparable(r) for r in base] == [_comparable(r) for r in hf_base]


# -- concurrency, streaming, abort ----------------------------------------------------------------


def test_32_concurrent_requests_complete_and_stream(vllm_engine):
    requests = [
        _request(f"c-{i}", PROMPTS[i % len(PROMPTS)], 24, temperature=0.8, seed=i)
        for i in range(32)
    ]
    deltas: dict[str, list[str]] = {r.request_id: [] for r in requests}

    def on_delta(request_id: str, delta: str) -> None:
        deltas[request_id].append(delta)

    async def run_all():
        return await asyncio.gather(*(vllm_engine.submit(r, on_delta) for r in requests))

    results = asyncio.run(run_all())
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for result in results:
        assert result.finish_reason in ("stop", "length"), result
        assert result.error is None
        assert "".join(deltas[result.request_id]) == result.raw_text  # deltas add up
    assert sum(r.completion_tokens for r in results) > 32
    assert vllm_engine.num_unfinished_requests() == 0


def _long_running_request(vllm_engine, max_new_tokens: int = 600) -> GenerationRequest:
    """A prompt whose greedy reply runs long (no early EOS), found by running it."""
    for i, prompt in enumerate(PROMPTS):
        probe = _generate(vllm_engine, [_request(f"probe-{i}", prompt, max_new_tokens)])[0]
        if probe.completion_tokens >= 300:
            return _request(f"long-{i}", prompt, max_new_tokens)
    pytest.fail("no prompt of the tiny checkpoint decodes 300 tokens before EOS")


def test_an_aborted_request_frees_its_slot(vllm_engine):
    request = _long_running_request(vllm_engine)

    async def abort_on_first_delta():
        first = asyncio.Event()
        task = asyncio.ensure_future(vllm_engine.submit(request, lambda _rid, _d: first.set()))
        await first.wait()
        assert await vllm_engine.abort(request.request_id) is True
        return await task

    result = asyncio.run(abort_on_first_delta())
    assert result.finish_reason == "abort"
    assert 0 < result.completion_tokens < 300
    assert vllm_engine.num_unfinished_requests() == 0
    again = _generate(vllm_engine, [_request("after-abort", PROMPTS[0])])[0]
    assert again.finish_reason in ("stop", "length")


def test_a_cancelled_caller_aborts_its_request(vllm_engine):
    request = _long_running_request(vllm_engine)

    async def disconnect_on_first_delta():
        first = asyncio.Event()
        task = asyncio.ensure_future(vllm_engine.submit(request, lambda _rid, _d: first.set()))
        await first.wait()
        task.cancel()  # what the worker does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(disconnect_on_first_delta())
    # The cancel reaches the engine loop a moment after the caller sees it.
    assert eventually(lambda: vllm_engine.num_unfinished_requests() == 0)


def test_abort_of_an_unknown_request_is_false(vllm_engine):
    assert asyncio.run(vllm_engine.abort("nobody")) is False


def test_a_request_id_cannot_run_twice_at_once(vllm_engine):
    request = _request("twin", PROMPTS[0])
    with pytest.raises(EngineError, match="already running"):
        _generate(vllm_engine, [request, request])


def test_prompt_longer_than_max_model_len_fails_alone(vllm_engine):
    long_text = " ".join(["a red circle moves to the left."] * 400)
    results = _generate(vllm_engine,
        [_request("too-long", long_text), _request("fine", PROMPTS[0])])
    assert results[0].finish_reason == "error" and "VLLM_MAX_MODEL_LEN" in results[0].error
    assert results[0].error_code == FailureCode.CONTEXT_TOO_LONG
    assert results[1].finish_reason in ("stop", "length")


def test_health_then_shutdown(model, checkpoint):
    """Own engine: the module's one stays up for the other tests."""
    engine = VllmEngine.start(
        VllmModelFiles.of_model(model, checkpoint),
        RequestInputs.for_model(model, cache_size=0),
        VllmOptions(gpu_memory_utilization=0.2, max_model_len=512, max_num_seqs=4,
                    dtype="float16", enforce_eager=True),
    )

    async def lifecycle():
        await engine.check_health()
        await engine.shutdown()
        with pytest.raises(EngineUnhealthy):
            await engine.check_health()

    asyncio.run(lifecycle())
    with pytest.raises(EngineError, match="shut down"):
        _generate(engine, [_request("late", PROMPTS[0])])
