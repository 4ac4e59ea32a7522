"""The vllm engine against the hf engine on the same tiny checkpoint, on whatever vLLM is
installed: its CPU backend in CI (`make test-vllm`, from .venv-vllm), a GPU where lent.

Skipped cleanly where vLLM is not installed (the main .venv). The parity and concurrency
tests run once per `VLLM_LORA_MODE`: "merged" (the adapter merged into the base, no LoRA
in vLLM) and "lora" (vLLM's LoRA kernels plus the fixes of vllm_plugin/); the request
mechanics (abort, cancel, limits), which share one code path, run on the merged engine.

- Precision: float32 on the CPU (both engines), float16 on a GPU (vLLM's LoRA kernels
  need 16 bit there; the hf engine is loaded in float16 too). Decoding is greedy, so the
  replies must match the hf engine's token for token: text, finish reason, token counts.
- The tiny LLM has head size 32 (`TinySizes(llm_heads=2, llm_kv_heads=1)`): vLLM's CPU
  attention takes head sizes 32, 64, 80, ... and kills the EngineCore on 16.
- The concurrency cases are the ones that crashed vLLM before the fixes: embeds + LoRA
  requests arriving while others decode (vLLM issue 51122) and adapter requests beside
  base-model ones (vLLM PR 48421). `VLLM_PLUGINS="" pytest tests/gpu` runs without the
  fixes, and the "lora" cases fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (make vllm-env, or pip install .[gpu])")
pytestmark = [pytest.mark.gpu]

from model.checkpoint import load_checkpoint  # noqa: E402
from model.engine.base import (  # noqa: E402
    EngineError,
    EngineUnavailable,
    EngineUnhealthy,
    FailureCode,
    GenerationRequest,
    SamplingParams,
    Turn,
)
from model.engine.feature_store import DiskFeatureStore, feature_key  # noqa: E402
from model.engine.hf_engine import HFEngine  # noqa: E402
from model.engine.inputs import RequestInputs  # noqa: E402
from model.engine.video_features import encoder_fingerprint  # noqa: E402
from model.engine.vllm_engine import (  # noqa: E402
    VllmEngine,
    VllmModelFiles,
    VllmOptions,
    vllm_platform,
)
from model.tiny import TinySizes, build_tiny_checkpoint  # noqa: E402
from model.video.sampling import SamplingOptions  # noqa: E402
from tests.media import make_video  # noqa: E402
from tests.waiting import eventually  # noqa: E402

PROMPTS = (
    "Describe the video.",
    "What happens in the video?",
    "Show me a red circle that moves to the left.",
    "How many objects? What colour is it?",
)
MAX_NEW_TOKENS = 12
ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
DTYPE = "float16" if ON_GPU else "float32"
MAX_MODEL_LEN = 1024
# For tests of what does not depend on how the adapter is served (indirect: the fixture's param).
MERGED_ONLY = pytest.mark.parametrize("vllm_engine", ["merged"], indirect=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sizes = TinySizes(llm_heads=2, llm_kv_heads=1)  # head size 32: vLLM's CPU attention has it
    path = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0, sizes=sizes)
    config_file = path / "gpt4video.json"
    config = json.loads(config_file.read_text())
    config["llm"]["dtype"] = DTYPE  # the hf engine computes in vLLM's precision
    config_file.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    return load_checkpoint(checkpoint, device=DEVICE)


@pytest.fixture(scope="module")
def merged_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-merged")


def _options(lora_mode: str, merged_cache: Path, **overrides) -> VllmOptions:
    values = dict(gpu_memory_utilization=0.3, max_model_len=MAX_MODEL_LEN, max_num_seqs=32, dtype=DTYPE,
                  enforce_eager=True, request_timeout_s=None, lora_mode=lora_mode,
                  merged_cache_dir=merged_cache, cpu_kvcache_space_gib=1)
    values.update(overrides)
    return VllmOptions(**values)


@pytest.fixture(scope="module")
def feature_store(tmp_path_factory: pytest.TempPathFactory) -> DiskFeatureStore:
    """The shared video-feature store (issue 18) behind both vllm engines, as the worker has it."""
    return DiskFeatureStore(tmp_path_factory.mktemp("features"), max_bytes=64 << 20)


@pytest.fixture(scope="module")
def vllm_inputs(model, feature_store: DiskFeatureStore) -> RequestInputs:
    """The vllm engines' video features: the per-process LRU in front of the shared store."""
    return RequestInputs.for_model(model, cache_size=16, store=feature_store)


@pytest.fixture(scope="module", params=["merged", "lora"])
def vllm_engine(request: pytest.FixtureRequest, model, checkpoint: Path, merged_cache: Path,
                vllm_inputs: RequestInputs):
    """One engine per lora mode; pytest runs all tests of one mode before starting the next."""
    engine = VllmEngine.start(
        VllmModelFiles.of_model(model, checkpoint),
        vllm_inputs,
        _options(request.param, merged_cache),
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
    return (result.request_id, result.raw_text, result.finish_reason, result.prompt_tokens,
            result.completion_tokens, result.error)


def _generate(engine: VllmEngine, requests, **kwargs) -> list:
    """Run requests together on the engine, from synchronous test code."""
    async def run_all() -> list:
        return list(await asyncio.gather(*(engine.submit(r, **kwargs) for r in requests)))

    return asyncio.run(run_all())


def _hf_one_by_one(hf_engine: HFEngine, requests) -> list:
    return [hf_engine.generate([r])[0] for r in requests]  # no padding: exact reference


def _hf_base_one_by_one(hf_engine: HFEngine, model, requests) -> list:
    with model.llm.disable_adapter():  # the hf reference without the adapter
        return _hf_one_by_one(hf_engine, requests)


def test_runs_on_the_platform_vllm_found(vllm_engine):
    assert vllm_platform() == ("cuda" if ON_GPU else "cpu")


# -- parity ------------------------------------------------------------------------------------


def test_greedy_text_matches_hf(vllm_engine, hf_engine):
    requests = [_request(f"text-{i}", p) for i, p in enumerate(PROMPTS)]
    from_vllm = _generate(vllm_engine, requests)
    from_hf = _hf_one_by_one(hf_engine, requests)
    assert any(r.completion_tokens > 0 for r in from_hf), "the reference generated nothing"
    assert [_comparable(r) for r in from_vllm] == [_comparable(r) for r in from_hf]


def test_greedy_with_video_matches_hf(vllm_engine, hf_engine, video, model):
    requests = [_request(f"video-{i}", p, video=video) for i, p in enumerate(PROMPTS[:2])]
    from_vllm = _generate(vllm_engine, requests)
    from_hf = _hf_one_by_one(hf_engine, requests)
    text_only = _generate(vllm_engine, [_request("plain", PROMPTS[0])])[0]
    assert from_vllm[0].prompt_tokens == text_only.prompt_tokens + model.num_video_tokens
    assert [_comparable(r) for r in from_vllm] == [_comparable(r) for r in from_hf]


def test_the_adapter_changes_the_output(vllm_engine, hf_engine, model):
    """The served weights carry the adapter (merged or not): the replies are the hf
    engine's with it and differ from the base LLM's (the tiny adapter's B is random)."""
    requests = [_request(f"ab-{i}", p) for i, p in enumerate(PROMPTS)]
    with_lora = _generate(vllm_engine, requests)
    assert [_comparable(r) for r in with_lora] == [_comparable(r) for r in _hf_one_by_one(hf_engine, requests)]
    hf_base = _hf_base_one_by_one(hf_engine, model, requests)
    assert [r.raw_text for r in with_lora] != [r.raw_text for r in hf_base]


def _no_decoding(path: str, n: int, size: int):
    raise AssertionError(f"{path} was decoded: its features should have come from the shared store")


@MERGED_ONLY
def test_video_features_are_shared_through_the_store(vllm_engine, vllm_inputs, model, feature_store, tmp_path):
    """Issue 18: the vllm engine writes what it encodes to the shared store, and takes from
    it what another worker encoded. An hf engine that cannot decode answers from vLLM's
    entry; vLLM answers a video an hf worker encoded without running its vision tower."""
    fingerprint = encoder_fingerprint(model, model.config.fingerprint(), SamplingOptions().key())
    # Neither is the module's `video`, which other tests have already encoded.
    first, second = (make_video(tmp_path / f"{name}.mp4", frames=12, pattern=pattern)
                     for name, pattern in (("first", "moving_box"), ("second", "noise")))
    first_id, second_id = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (first, second))
    assert first_id != second_id
    ask_first, ask_second = (_request("shared", PROMPTS[0], video=(vid, str(p)))
                             for vid, p in ((first_id, first), (second_id, second)))
    extractor = vllm_inputs.features
    encoded, hits = extractor.encoded_videos, extractor.store_hits

    (from_vllm,) = _generate(vllm_engine, [ask_first])
    assert extractor.encoded_videos == encoded + 1
    assert feature_store.get(feature_key(fingerprint, first_id)) is not None, "vLLM did not write its features"
    reader = HFEngine(model, sampler=_no_decoding, fingerprint=fingerprint, feature_store=feature_store)
    assert _comparable(reader.generate([ask_first])[0]) == _comparable(from_vllm)

    other_worker = HFEngine(model, feature_store=feature_store)
    (from_hf,) = other_worker.generate([ask_second])
    assert other_worker.inputs.features.encoded_videos == 1
    (from_vllm,) = _generate(vllm_engine, [ask_second])
    assert (extractor.encoded_videos, extractor.store_hits) == (encoded + 1, hits + 1), "vLLM re-encoded"
    assert _comparable(from_vllm) == _comparable(from_hf)


# -- concurrency: what crashed vLLM before the fixes -------------------------------------------


def test_requests_arriving_while_others_decode_match_hf(vllm_engine, hf_engine, video):
    """vLLM issue 51122: a step with a new prompt_embeds prefill beside two or more decoding
    rows, with the adapter in the batch, killed the EngineCore (lora mode, no fix)."""
    early = [_request(f"early-{i}", PROMPTS[i], 48) for i in range(3)]
    late = [_request("late-video-0", PROMPTS[0], 16, video=video),
            _request("late-text-1", PROMPTS[1], 16),
            _request("late-video-2", PROMPTS[2], 16, video=video)]

    async def staggered():
        decoding = {r.request_id: asyncio.Event() for r in early}
        tasks = [asyncio.ensure_future(vllm_engine.submit(r, lambda rid, _d: decoding[rid].set()))
                 for r in early]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in decoding.values())), 120)
        late_tasks = []
        for r in late:  # one at a time, each joining a batch that is decoding
            late_tasks.append(asyncio.ensure_future(vllm_engine.submit(r)))
            await asyncio.sleep(0.05)
        return list(await asyncio.gather(*tasks, *late_tasks))

    results = asyncio.run(staggered())
    assert all(r.error is None for r in results), [r.error for r in results]
    reference = _hf_one_by_one(hf_engine, early + late)
    assert [_comparable(r) for r in results] == [_comparable(r) for r in reference]


def test_text_and_video_requests_together_match_hf(vllm_engine, hf_engine, video):
    requests = [_request(f"mixed-{i}", PROMPTS[i % 4], 10 + i, video=video if i % 2 else None)
                for i in range(8)]
    from_vllm = _generate(vllm_engine, requests)
    assert [_comparable(r) for r in from_vllm] == [_comparable(r) for r in _hf_one_by_one(hf_engine, requests)]


@pytest.mark.parametrize("vllm_engine", ["lora"], indirect=True)
def test_adapter_and_base_requests_together_match_hf(vllm_engine, hf_engine, model):
    """vLLM PR 48421: on the CPU, base-model rows batched beside adapter rows got the
    adapter (index -1 picked the last adapter slot). lora mode only."""
    with_lora = [_request(f"lora-{i}", p) for i, p in enumerate(PROMPTS)]
    base = [_request(f"base-{i}", p) for i, p in enumerate(PROMPTS)]

    async def together():
        tasks = [vllm_engine.submit(r) for r in with_lora]
        tasks += [vllm_engine.submit(r, use_adapter=False) for r in base]
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(together())
    assert [_comparable(r) for r in results[:4]] == [_comparable(r) for r in _hf_one_by_one(hf_engine, with_lora)]
    assert [_comparable(r) for r in results[4:]] == [
        _comparable(r) for r in _hf_base_one_by_one(hf_engine, model, base)]


@MERGED_ONLY
def test_base_requests_are_refused_when_the_adapter_is_merged(vllm_engine):
    with pytest.raises(EngineError, match="VLLM_LORA_MODE=lora"):
        _generate(vllm_engine, [_request("base", PROMPTS[0])], use_adapter=False)


@MERGED_ONLY
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


# -- abort, limits, lifecycle ----------------------------------------------------------------------


def _long_running_request(vllm_engine, max_new_tokens: int = 600) -> GenerationRequest:
    """A prompt whose greedy reply runs long (no early EOS), found by running it."""
    for i, prompt in enumerate(PROMPTS):
        probe = _generate(vllm_engine, [_request(f"probe-{i}", prompt, max_new_tokens)])[0]
        if probe.completion_tokens >= 300:
            return _request(f"long-{i}", prompt, max_new_tokens)
    pytest.fail("no prompt of the tiny checkpoint decodes 300 tokens before EOS")


@MERGED_ONLY
def test_an_aborted_request_frees_its_slot(vllm_engine):
    request = _long_running_request(vllm_engine)
    beside = [_request(f"beside-{i}", p, 40) for i, p in enumerate(PROMPTS[:2])]

    async def abort_on_first_delta():
        first = asyncio.Event()
        task = asyncio.ensure_future(vllm_engine.submit(request, lambda _rid, _d: first.set()))
        others = [asyncio.ensure_future(vllm_engine.submit(r)) for r in beside]
        await first.wait()
        assert await vllm_engine.abort(request.request_id) is True
        return await task, await asyncio.gather(*others)

    result, others = asyncio.run(abort_on_first_delta())
    assert result.finish_reason == "abort"
    assert 0 < result.completion_tokens < 300
    assert all(r.finish_reason in ("stop", "length") for r in others)  # the batch went on
    assert vllm_engine.num_unfinished_requests() == 0
    again = _generate(vllm_engine, [_request("after-abort", PROMPTS[0])])[0]
    assert again.finish_reason in ("stop", "length")


@MERGED_ONLY
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


@MERGED_ONLY
def test_abort_of_an_unknown_request_is_false(vllm_engine):
    assert asyncio.run(vllm_engine.abort("nobody")) is False


@MERGED_ONLY
def test_a_request_id_cannot_run_twice_at_once(vllm_engine):
    request = _request("twin", PROMPTS[0])
    with pytest.raises(EngineError, match="already running"):
        _generate(vllm_engine, [request, request])


@MERGED_ONLY
def test_prompt_longer_than_max_model_len_fails_alone(vllm_engine):
    """A client error (context_too_long, a 400-class status at the API), not a dead engine."""
    long_text = " ".join(["a red circle moves to the left."] * 400)
    results = _generate(vllm_engine, [_request("too-long", long_text), _request("fine", PROMPTS[0])])
    assert results[0].finish_reason == "error" and "VLLM_MAX_MODEL_LEN" in results[0].error
    assert results[0].error_code == FailureCode.CONTEXT_TOO_LONG
    assert results[0].prompt_tokens > MAX_MODEL_LEN
    assert results[1].finish_reason in ("stop", "length")
    asyncio.run(vllm_engine.check_health())


@MERGED_ONLY
def test_a_reply_that_reaches_max_model_len_stops_there(vllm_engine, model):
    """A prompt that fits but leaves less room than max_new_tokens: the reply ends at the
    context limit, and the engine stays healthy."""
    sentence = "a red circle moves to the left. "

    def prompt_tokens(n: int) -> int:
        return int(model.prompt_embeds((Turn("user", sentence * n),), {}).shape[0])

    per_sentence = (prompt_tokens(20) - prompt_tokens(0)) / 20
    n = int((MAX_MODEL_LEN - 24 - prompt_tokens(0)) / per_sentence)
    while prompt_tokens(n) >= MAX_MODEL_LEN - 8:
        n -= 1
    text = sentence * n
    result = _generate(vllm_engine, [_request("near-limit", text, 600)])[0]
    assert MAX_MODEL_LEN - 40 < result.prompt_tokens < MAX_MODEL_LEN
    assert result.finish_reason in ("stop", "length"), result.error
    assert result.prompt_tokens + result.completion_tokens <= MAX_MODEL_LEN
    asyncio.run(vllm_engine.check_health())


@pytest.mark.skipif(ON_GPU, reason="a limit of vLLM's CPU attention")
def test_a_head_size_the_cpu_attention_lacks_is_refused_at_start(tmp_path):
    """Head size 16 (the tiny builder's default): a clear start error, not an engine that
    comes up and dies at its first request."""
    path = build_tiny_checkpoint(tmp_path / "head16", seed=0)
    model = load_checkpoint(path)
    with pytest.raises(EngineUnavailable, match="head size 16"):
        VllmEngine.start(VllmModelFiles.of_model(model, path), RequestInputs.for_model(model, cache_size=0),
                         _options("merged", tmp_path / "merged"))


def test_health_then_shutdown(model, checkpoint, merged_cache):
    """Own engine (merged: the cached merge makes it quick); the module's stays up."""
    engine = VllmEngine.start(
        VllmModelFiles.of_model(model, checkpoint),
        RequestInputs.for_model(model, cache_size=0),
        _options("merged", merged_cache, gpu_memory_utilization=0.2, max_model_len=512, max_num_seqs=4),
    )

    async def lifecycle():
        await engine.check_health()
        await engine.shutdown()
        with pytest.raises(EngineUnhealthy):
            await engine.check_health()

    asyncio.run(lifecycle())
    with pytest.raises(EngineError, match="shut down"):
        _generate(engine, [_request("late", PROMPTS[0])])
