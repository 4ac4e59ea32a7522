"""Engine selection and the CPU-testable parts of the vllm engine.

The vllm engine itself needs vLLM (tests/gpu/); here: ENGINE=vllm fails with an
actionable `EngineUnavailable` where it is missing, ENGINE=auto (the default) is hf there
and serves, and the pieces of the vllm path that run anywhere (adapter rank, sampling
mapping, options, prompt embeddings) behave.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gpt4video.settings import load_settings
from model.checkpoint import load_checkpoint
from model.engine.base import (
    EngineError,
    EngineUnavailable,
    FailureCode,
    GenerationRequest,
    SamplingParams,
    Turn,
    VideoInputError,
)
from model.engine.factory import build_engine, resolve_engine
from model.engine.inputs import RequestInputs
from model.engine.vllm_engine import (
    AdapterConfigError,
    VllmModelFiles,
    VllmOptions,
    adapter_max_lora_rank,
    fit_max_model_len,
    vllm_sampling_kwargs,
)
from model.tiny import build_tiny_checkpoint

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(checkpoint: Path):
    return load_checkpoint(checkpoint)


def _request(request_id: str = "r1", videos: tuple[str, ...] = (), paths: dict | None = None):
    return GenerationRequest(
        request_id=request_id,
        turns=(Turn("user", "Describe the video.", videos),),
        sampling=SamplingParams(max_new_tokens=6),
        video_paths=paths or {},
    )


# -- selection --------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed (GPU or its CPU backend): see tests/gpu")
def test_vllm_engine_without_vllm_raises_an_actionable_error(model, checkpoint):
    settings = load_settings(engine="vllm")
    with pytest.raises(EngineUnavailable) as caught:
        build_engine(settings, model, checkpoint)
    message = str(caught.value)
    assert "ENGINE=hf" in message  # says what to do instead
    assert "not installed" in message and "pip install .[gpu]" in message and "make vllm-env" in message


def test_engine_default_is_auto_and_explicit_choices_stand():
    assert load_settings().engine == "auto"
    assert resolve_engine(load_settings(engine="hf")) == "hf"
    assert resolve_engine(load_settings(engine="vllm")) == "vllm"  # build_engine then says what is missing


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: auto picks it (tests/gpu)")
def test_hf_engine_is_selected_by_default_without_vllm_and_serves(model):
    from model.engine.batching import BatchingEngine
    from model.engine.hf_engine import HFEngine

    settings = load_settings(llm_max_batch=3)
    assert resolve_engine(settings) == "hf"
    engine = build_engine(settings, model)
    assert isinstance(engine, BatchingEngine)
    assert isinstance(engine.engine, HFEngine) and engine.max_batch == 3

    async def serve():
        try:
            return await engine.submit(_request())
        finally:
            await engine.shutdown()

    result = asyncio.run(serve())
    assert result.request_id == "r1"
    assert result.finish_reason in ("stop", "length")
    assert result.prompt_tokens > 0


# -- adapter, sampling, options ----------------------------------------------------------------


def _adapter(tmp_path: Path, **fields) -> Path:
    config = {"peft_type": "LORA", "r": 16, "bias": "none", "modules_to_save": None,
              "rank_pattern": {}, "target_modules": ["q_proj", "v_proj"]}
    config.update(fields)
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    return tmp_path


def test_max_lora_rank_of_the_tiny_checkpoints_adapter(checkpoint):
    assert adapter_max_lora_rank(checkpoint / "lora") == 16


@pytest.mark.parametrize(("r", "pattern", "expected"), [
    (4, {}, 8),  # rounded up to a rank vLLM accepts
    (16, {"layers.0.self_attn.q_proj": 40}, 64),  # the largest rank counts
    (1, {}, 1),
    (512, {}, 512),
])
def test_max_lora_rank_rounds_up_to_vllms_ranks(tmp_path, r, pattern, expected):
    assert adapter_max_lora_rank(_adapter(tmp_path, r=r, rank_pattern=pattern)) == expected


@pytest.mark.parametrize(("fields", "needle"), [
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias"),
    ({"r": 1024}, "exceeds"),
    ({"peft_type": "IA3"}, "not LORA"),
])
def test_adapters_vllm_cannot_serve_are_rejected(tmp_path, fields, needle):
    with pytest.raises(AdapterConfigError, match=needle):
        adapter_max_lora_rank(_adapter(tmp_path, **fields))


def test_missing_adapter_is_named(tmp_path):
    with pytest.raises(AdapterConfigError, match=r"adapter_config\.json is missing"):
        adapter_max_lora_rank(tmp_path)


def test_max_model_len_fits_the_llm(checkpoint, tmp_path):
    llm_dir = checkpoint / "llm"
    limit = json.loads((llm_dir / "config.json").read_text())["max_position_embeddings"]
    assert fit_max_model_len(llm_dir, limit + 1000) == limit
    assert fit_max_model_len(llm_dir, 512) == 512
    scaled = {"max_position_embeddings": 2048, "rope_scaling": {"type": "linear", "factor": 2.0}}
    (tmp_path / "config.json").write_text(json.dumps(scaled))
    assert fit_max_model_len(tmp_path, 4096) == 4096  # vLLM derives the scaled length itself


def test_sampling_mapping():
    greedy = vllm_sampling_kwargs(SamplingParams(max_new_tokens=7, temperature=0.0, top_p=0.5,
                                                 stop=("</video>", "")))
    assert greedy == {"max_tokens": 7, "temperature": 0.0, "top_p": 1.0, "seed": None,
                      "stop": ["</video>"], "skip_special_tokens": True}
    sampled = vllm_sampling_kwargs(SamplingParams(temperature=0.7, top_p=0.9, seed=3))
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"]) == (0.7, 0.9, 3)


def test_options_come_from_settings(tmp_path):
    settings = load_settings(
        vllm_gpu_memory_utilization=0.5, vllm_max_model_len=1024, vllm_max_num_seqs=8,
        vllm_dtype="bfloat16", vllm_tensor_parallel_size=2, llm_request_timeout_s=9,
        feature_cache_size=3, vllm_lora_mode="lora", vllm_cpu_kvcache_space=3, vllm_enforce_eager=True,
        data_dir=tmp_path,
    )
    assert VllmOptions.from_settings(settings) == VllmOptions(
        gpu_memory_utilization=0.5, max_model_len=1024, max_num_seqs=8, dtype="bfloat16",
        tensor_parallel_size=2, request_timeout_s=9, feature_cache_size=3, lora_mode="lora",
        merged_cache_dir=tmp_path / "models" / "vllm-merged", cpu_kvcache_space_gib=3, enforce_eager=True,
    )
    assert VllmOptions.from_settings(load_settings()).lora_mode == "merged"  # the default


def test_model_files_resolve_against_the_checkpoint(model, checkpoint):
    files = VllmModelFiles.of_model(model, checkpoint)
    assert files == VllmModelFiles(checkpoint / "llm", checkpoint / "lora")
    assert (files.llm_dir / "config.json").is_file()
    assert (files.lora_dir / "adapter_config.json").is_file()


def test_model_files_default_to_where_the_model_was_loaded_from(model, checkpoint):
    assert VllmModelFiles.of_model(model) == VllmModelFiles(checkpoint / "llm", checkpoint / "lora")


def test_model_files_need_the_checkpoint_directory(model):
    unlocated = SimpleNamespace(config=model.config)  # a model not from load_checkpoint
    with pytest.raises(EngineError, match="checkpoint_dir"):
        VllmModelFiles.of_model(unlocated)


# -- prompt embeddings (what is sent as {"prompt_embeds": ...}) ---------------------------------


def _frames(path: str, n: int, size: int) -> np.ndarray:
    seed = sum(path.encode())
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_text_prompt_embeds_are_the_models(model):
    embedder = RequestInputs.for_model(model, cache_size=4, sampler=_frames)
    request = _request()
    embeds = embedder(request)  # (L, D)
    expected = model.prompt_embeds(request.turns, {})
    assert embeds.shape == (expected.shape[0], model.llm.get_input_embeddings().weight.shape[1])
    assert torch.equal(embeds, expected)


# Video ids are the sha256 of the file in this service (no file is read to hash them).
V1, V2 = "a" * 64, "b" * 64


def test_video_tokens_are_spliced_in(model):
    embedder = RequestInputs.for_model(model, cache_size=4, sampler=_frames)
    text_only = embedder(_request())
    with_video = embedder(_request(videos=(V1,), paths={V1: "clip-a.mp4"}))
    nq = model.num_video_tokens
    assert with_video.shape[0] == text_only.shape[0] + nq
    sequence = model.build_sequence(
        (Turn("user", "Describe the video.", (V1,)),),
        {V1: torch.zeros(nq, with_video.shape[1])}, add_generation_prompt=True,
    )
    start, end = sequence.video_spans[0]
    frames = torch.from_numpy(_frames("clip-a.mp4", model.vision.cfg.num_frames,
                                      model.vision.cfg.image_size))
    with torch.inference_mode():
        expected = model.encode_frames(frames[None])[0]  # (Nq, D)
    torch.testing.assert_close(with_video[start:end], expected)
    assert embedder.features.encoded_videos == 1
    embedder(_request("r2", videos=(V1,), paths={V1: "clip-a.mp4"}))
    assert embedder.features.encoded_videos == 1  # cached


def test_unreadable_or_missing_video_is_a_video_input_error(model):
    def broken(path: str, n: int, size: int) -> np.ndarray:
        raise OSError(f"cannot decode {path}")

    embedder = RequestInputs.for_model(model, cache_size=4, sampler=broken)
    with pytest.raises(VideoInputError, match=r"cannot decode bad\.mp4") as caught:
        embedder(_request(videos=(V1,), paths={V1: "bad.mp4"}))
    assert caught.value.code == FailureCode.VIDEO_UNREADABLE
    with pytest.raises(VideoInputError, match=f"{V2} has no path") as caught:
        embedder(_request(videos=(V2,)))
    assert caught.value.code == FailureCode.VIDEO_MISSING
