"""The `hf` engine on the tiny checkpoint: batching, sampling, stopping, abort, failures,
the feature cache, and the async `BatchingEngine` in front of it.

Videos come from `SeededFrameSampler` (frames made from the path string) except in the
one test that decodes a real MP4 written by `tests.media`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from model.engine.base import (
    DeltaCallback,
    FailureCode,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    Turn,
)
from model.engine.batching import BatchingEngine
from model.engine.hf_engine import HFEngine, sample_next
from model.network import GPT4VideoModel
from tests.frames import SeededFrameSampler, fake_video_id, seeded_frames

ONE, TWO, THREE, BROKEN = (fake_video_id(n) for n in ("one", "two", "three", "broken"))
PATHS = {ONE: "/videos/one.mp4", TWO: "/videos/two.mp4", THREE: "/videos/three.mp4", BROKEN: "/videos/broken.mp4"}


def request(request_id: str, turns: list[Turn], **sampling) -> GenerationRequest:
    videos = {v for t in turns for v in t.videos}
    return GenerationRequest(request_id, tuple(turns), SamplingParams(**sampling), {v: PATHS[v] for v in videos})


def mixed_requests() -> list[GenerationRequest]:
    """Different prompt lengths, 0-2 videos, greedy and seeded sampling, different limits."""
    return [
        request("greedy-video", [Turn("user", "Describe the video.", (ONE,))], max_new_tokens=12),
        request("sampled-text", [Turn("user", "hi")], max_new_tokens=30, temperature=0.8, top_p=0.9, seed=3),
        request("sampled-two-videos", [
            Turn("user", "What shape is it? And this one?", (ONE, TWO)),
            Turn("assistant", "a red circle and a blue square."),
            Turn("user", "Which moves left?"),
        ], max_new_tokens=20, temperature=1.0, seed=7),
        request("greedy-long", [
            Turn("system", "Be short."),
            Turn("user", "a blue square moves up. a green triangle moves down. What do you think of them?"),
        ], max_new_tokens=25),
        request("sampled-short", [Turn("user", "Colour?", (THREE,))],
                max_new_tokens=5, temperature=1.3, top_p=0.5, seed=11),
    ]


@pytest.fixture
def engine(tiny_model: GPT4VideoModel, frame_sampler: SeededFrameSampler) -> HFEngine:
    return HFEngine(tiny_model, sampler=frame_sampler)


def collect_deltas() -> tuple[dict[str, str], DeltaCallback]:
    streamed: dict[str, str] = defaultdict(str)

    def on_delta(request_id: str, delta: str) -> None:
        assert delta, "empty delta"
        streamed[request_id] += delta

    return streamed, on_delta


def test_batch_gives_the_same_results_as_one_at_a_time(engine: HFEngine) -> None:
    requests = mixed_requests()
    batched = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    assert [r.request_id for r in batched] == [r.request_id for r in requests]
    assert batched == alone
    again = engine.generate(list(reversed(requests)))  # position in the batch does not matter
    assert list(reversed(again)) == batched
    for req, result in zip(requests, batched, strict=True):
        assert result.finish_reason in ("stop", "length")
        assert result.error is None
        assert 0 < result.completion_tokens <= req.sampling.max_new_tokens
        if result.finish_reason == "length":
            assert result.completion_tokens == req.sampling.max_new_tokens


def test_prompt_tokens_count_video_tokens(engine: HFEngine, tiny_model: GPT4VideoModel) -> None:
    with_video, text_only = engine.generate([
        request("v", [Turn("user", "Describe the video.", (ONE,))], max_new_tokens=1),
        request("t", [Turn("user", "Describe the video.")], max_new_tokens=1),
    ])
    assert with_video.prompt_tokens == text_only.prompt_tokens + tiny_model.num_video_tokens
    expected = tiny_model.build_sequence([Turn("user", "Describe the video.")], {}, add_generation_prompt=True)
    assert text_only.prompt_tokens == len(expected.token_ids)


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine: HFEngine) -> None:
    def sampled(seed: int) -> GenerationRequest:
        return request(f"s{seed}", [Turn("user", "hi")], max_new_tokens=16, temperature=1.0, seed=seed)

    first, second, other = engine.generate([sampled(1), sampled(1), sampled(2)])
    assert first.raw_text == second.raw_text and first.raw_text
    assert other.raw_text != first.raw_text


def test_greedy_follows_the_argmax(engine: HFEngine, tiny_model: GPT4VideoModel) -> None:
    turns = [Turn("user", "What colour is it?")]
    (result,) = engine.generate([request("g", turns, max_new_tokens=4)])
    embeds = tiny_model.prompt_embeds(turns, {})[None]  # (1, L, D)
    ids: list[int] = []
    with torch.no_grad():
        for _ in range(4):
            logits = tiny_model.llm(inputs_embeds=embeds).logits[0, -1]  # (V,)
            ids.append(int(logits.argmax()))
            next_embed = tiny_model.embed_tokens(torch.tensor([ids[-1]]))[None]  # (1, 1, D)
            embeds = torch.cat([embeds, next_embed], dim=1)  # (1, L+1, D)
    assert tiny_model.tokenizer.eos_token_id not in ids
    assert result.raw_text == tiny_model.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("limit", range(1, 13))
def test_max_new_tokens_holds_inside_a_longer_batch(engine: HFEngine, limit: int) -> None:
    # Byte-level tokens often end half-way through a UTF-8 character; the limit must still hold.
    short = request("short", [Turn("user", "hi")], max_new_tokens=limit, temperature=1.0, seed=3)
    long = request("long", [Turn("user", "hi")], max_new_tokens=40)
    result, _ = engine.generate([short, long])
    assert result.finish_reason in ("length", "stop")
    assert result.completion_tokens <= limit
    if result.finish_reason == "length":
        assert result.completion_tokens == limit
    assert result == engine.generate([short])[0]


def test_a_reply_cut_inside_a_character_drops_the_partial_bytes(
    engine: HFEngine, tiny_model: GPT4VideoModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One behaviour for both engines (vLLM's detokenizer does the same): a reply that ends
    inside a UTF-8 character ends before it; the tokens still count."""
    import model.engine.hf_engine as hf_engine

    ids = tiny_model.tokenizer.encode("ab€", add_special_tokens=False)  # '€' is 3 byte tokens here
    assert len(ids) >= 4 and tiny_model.tokenizer.decode(ids[:-1]).endswith("\ufffd")
    script = iter(ids)
    monkeypatch.setattr(hf_engine, "sample_next", lambda *_args: next(script))
    streamed, on_delta = collect_deltas()
    (result,) = engine.generate([request("cut", [Turn("user", "hi")], max_new_tokens=len(ids) - 1)],
                                on_delta=on_delta)
    assert (result.raw_text, result.completion_tokens, result.finish_reason) == ("ab", len(ids) - 1, "length")
    assert streamed["cut"] == "ab"
    script = iter(ids)  # the whole character arrives: it is kept
    (whole,) = engine.generate([request("whole", [Turn("user", "hi")], max_new_tokens=len(ids))])
    assert whole.raw_text == "ab€"


def test_stop_string_cuts_the_reply(engine: HFEngine) -> None:
    base = request("stop", [Turn("user", "a blue square moves up. What do you think?")], max_new_tokens=30)
    (full,) = engine.generate([base])
    text = full.raw_text
    assert len(text) > 12
    stop = text[len(text) // 2: len(text) // 2 + 4]
    cut = text.find(stop)
    streamed, on_delta = collect_deltas()
    with_stop = dataclasses.replace(base, sampling=dataclasses.replace(base.sampling, stop=("NEVER", stop)))
    (result,) = engine.generate([with_stop], on_delta=on_delta)
    assert result.finish_reason == "stop"
    assert result.raw_text == text[:cut]
    assert result.completion_tokens < full.completion_tokens
    assert streamed["stop"] == result.raw_text  # the stream never shows the stop string


def test_eos_ends_the_turn_with_stop(tiny_checkpoint_dir: Path, frame_sampler: SeededFrameSampler) -> None:
    from model.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_checkpoint_dir)  # own copy: a hook is added below
    eos = model.tokenizer.eos_token_id
    calls = {"n": 0}

    def force_eos_from_fifth_call(module, args, output):  # prefill + 3 steps give 4 tokens
        calls["n"] += 1
        if calls["n"] >= 5:
            output = output.clone()
            output[..., eos] = 1e4
        return output

    model.llm.get_base_model().lm_head.register_forward_hook(force_eos_from_fifth_call)
    engine = HFEngine(model, sampler=frame_sampler)
    streamed, on_delta = collect_deltas()
    ended, limited = engine.generate([
        request("ends", [Turn("user", "hi")], max_new_tokens=50),
        request("limited", [Turn("user", "hello there")], max_new_tokens=2),
    ], on_delta=on_delta)
    assert (ended.finish_reason, ended.completion_tokens) == ("stop", 4)
    assert (limited.finish_reason, limited.completion_tokens) == ("length", 2)
    assert "</s>" not in ended.raw_text
    assert streamed["ends"] == ended.raw_text


def test_stream_adds_up_to_the_reply(engine: HFEngine) -> None:
    requests = mixed_requests()
    streamed, on_delta = collect_deltas()
    results = engine.generate(requests, on_delta=on_delta)
    for result in results:
        assert streamed[result.request_id] == result.raw_text


def test_abort_from_the_stream_stops_only_that_request(engine: HFEngine) -> None:
    requests = mixed_requests()
    target = "greedy-long"
    reference = engine.generate(requests)
    seen: dict[str, int] = defaultdict(int)

    def on_delta(request_id: str, delta: str) -> None:
        seen[request_id] += 1
        if request_id == target:
            assert engine.abort(request_id)

    results = engine.generate(requests, on_delta=on_delta)
    by_id = {r.request_id: r for r in results}
    assert seen[target] == 1  # no text after the abort
    assert by_id[target].finish_reason == "abort"
    ref = {r.request_id: r for r in reference}[target]
    assert 0 < by_id[target].completion_tokens < ref.completion_tokens
    assert ref.raw_text.startswith(by_id[target].raw_text)
    for ref_result, result in zip(reference, results, strict=True):
        if result.request_id != target:
            assert result == ref_result
    # The abort is spent: the same request id runs to the end next time.
    (rerun,) = engine.generate([next(r for r in requests if r.request_id == target)])
    assert rerun == ref


def test_unreadable_video_fails_only_its_request(engine: HFEngine, frame_sampler: SeededFrameSampler) -> None:
    frame_sampler.unreadable.add(PATHS[BROKEN])
    good = mixed_requests()[:3]
    bad = request("bad", [Turn("user", "Describe.", (ONE, BROKEN))], max_new_tokens=5)
    no_path = GenerationRequest("no-path", (Turn("user", "Describe.", (TWO,)),), SamplingParams(max_new_tokens=5))
    results = engine.generate([good[0], bad, good[1], no_path, good[2]])
    by_id = {r.request_id: r for r in results}
    assert by_id["bad"].finish_reason == "error"
    assert BROKEN in by_id["bad"].error and "could not be read" in by_id["bad"].error
    assert by_id["bad"].error_code == FailureCode.VIDEO_UNREADABLE
    assert (by_id["bad"].raw_text, by_id["bad"].completion_tokens) == ("", 0)
    # A neighbour ("sampled-two-videos") has TWO with a path; no-path must not borrow it.
    assert by_id["no-path"].finish_reason == "error"
    assert "has no path" in by_id["no-path"].error
    assert by_id["no-path"].error_code == FailureCode.VIDEO_MISSING  # the API resolves every id
    assert [by_id[r.request_id] for r in good] == engine.generate(good)


def test_a_prompt_longer_than_the_context_fails_alone_naming_the_limit(engine: HFEngine) -> None:
    words = " ".join(["a red circle moves to the left."] * 40)
    probe = engine.inputs.sequence(request("probe", [Turn("user", words)]), {})
    repeats = 2 * engine.context_len // len(probe.token_ids)  # well past the context
    too_long = request("too-long", [Turn("user", " ".join([words] * repeats))], max_new_tokens=4)
    fine = request("fine", [Turn("user", "hi")], max_new_tokens=4)
    results = {r.request_id: r for r in engine.generate([too_long, fine])}
    failed = results["too-long"]
    assert failed.finish_reason == "error" and failed.error_code == FailureCode.CONTEXT_TOO_LONG
    assert f"context is {engine.context_len} tokens" in failed.error
    assert results["fine"] == engine.generate([fine])[0]


def test_a_reply_stops_at_the_end_of_the_context(tiny_model: GPT4VideoModel, frame_sampler) -> None:
    engine = HFEngine(tiny_model, sampler=frame_sampler)
    edge = request("edge", [Turn("user", "hi")], max_new_tokens=50, temperature=1.0, seed=0)
    prompt_tokens = len(engine.inputs.sequence(edge, {}).token_ids)
    engine.context_len = prompt_tokens + 2  # as if the model's context ended two tokens later
    (result,) = engine.generate([edge])
    assert result.error is None and result.prompt_tokens == prompt_tokens
    assert result.completion_tokens <= 2


def test_cache_prevents_decoding_and_encoding_again(
    engine: HFEngine, frame_sampler: SeededFrameSampler, tiny_model: GPT4VideoModel
) -> None:
    features, cache = engine.inputs.features, engine.inputs.features.cache
    engine.generate([request("q1", [Turn("user", "Describe the video.", (ONE,))], max_new_tokens=3)])
    assert (features.encoded_videos, frame_sampler.calls[PATHS[ONE]]) == (1, 1)
    hits = cache.hits
    second = request("q2", [Turn("user", "What colour is it?", (ONE,))], max_new_tokens=3)
    (result,) = engine.generate([second])
    assert result.finish_reason in ("length", "stop")
    assert features.encoded_videos == 1  # not encoded again
    assert frame_sampler.calls[PATHS[ONE]] == 1  # not even decoded again
    assert cache.hits == hits + 1
    # The cached features are what the model computes from the video's frames.
    cached = features.features({ONE: PATHS[ONE]})[ONE]  # (Nq, D)
    frames = torch.from_numpy(seeded_frames(PATHS[ONE], tiny_model.vision.cfg.num_frames,
                                            tiny_model.vision.cfg.image_size))[None]  # (1, T, H, W, 3)
    with torch.no_grad():
        torch.testing.assert_close(cached, tiny_model.encode_frames(frames)[0], rtol=1e-5, atol=1e-5)
    # Two requests about a new video in one batch: decoded and encoded once.
    engine.generate([request("a", [Turn("user", "x", (TWO,))], max_new_tokens=1),
                     request("b", [Turn("user", "y", (TWO,))], max_new_tokens=1)])
    assert (features.encoded_videos, frame_sampler.calls[PATHS[TWO]]) == (2, 1)


def test_cache_keys_by_content_not_by_id(engine: HFEngine, frame_sampler: SeededFrameSampler, tmp_path: Path) -> None:
    # Ids that are not sha256 hashes are keyed by the file's bytes: a re-upload under
    # another id is the same video.
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"same bytes")
    (tmp_path / "c.mp4").write_bytes(b"other bytes")
    features = engine.inputs.features
    features.features({"first": str(tmp_path / "a.mp4")})
    features.features({"second": str(tmp_path / "b.mp4")})
    assert features.encoded_videos == 1
    assert frame_sampler.calls[str(tmp_path / "b.mp4")] == 0
    features.features({"third": str(tmp_path / "c.mp4")})
    assert features.encoded_videos == 2


def test_same_id_for_different_files_in_one_batch(engine: HFEngine, tmp_path: Path) -> None:
    # Two clients both call their upload "clip": each request must see its own file.
    paths = []
    for name in ("mine", "yours"):
        (tmp_path / name).mkdir()
        path = tmp_path / name / "clip.mp4"
        path.write_bytes(name.encode())
        paths.append(str(path))
    requests = [GenerationRequest(f"r-{i}", (Turn("user", "Describe the video.", ("clip",)),),
                                  SamplingParams(max_new_tokens=24, temperature=1.5, seed=0), {"clip": p})
                for i, p in enumerate(paths)]  # hot sampling: the tiny model's greedy reply ignores the video
    together = engine.generate(requests)
    assert together == [engine.generate([r])[0] for r in requests]
    mine, yours = (engine.inputs.features.features({"clip": p})["clip"] for p in paths)
    assert not torch.equal(mine, yours)


def test_check_health_and_shutdown(engine: HFEngine) -> None:
    engine.check_health()
    engine.generate([request("q", [Turn("user", "x", (ONE,))], max_new_tokens=1)])
    engine.shutdown()
    engine.generate([request("q", [Turn("user", "x", (ONE,))], max_new_tokens=1)])
    assert engine.inputs.features.encoded_videos == 2  # the cache was dropped


def test_sample_next() -> None:
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])  # (V,)
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, SamplingParams(temperature=0.0), gen) == 1
    # A tiny nucleus keeps only the most likely token, whatever the temperature.
    nucleus = SamplingParams(temperature=5.0, top_p=1e-6)
    assert {sample_next(logits, nucleus, gen) for _ in range(50)} == {1}
    tiniest = SamplingParams(temperature=1.0, top_p=5e-324)  # > 0 as a float64, 0 in float32
    assert sample_next(logits, tiniest, gen) == 1
    # top_p just above p(token 1) keeps tokens 1 and 2 only.
    probs = torch.softmax(logits, dim=0)
    two = SamplingParams(temperature=1.0, top_p=float(probs[1]) + 0.01)
    assert {sample_next(logits, two, gen) for _ in range(200)} == {1, 2}
    wide = SamplingParams(temperature=1.0)
    draws = [sample_next(logits, wide, torch.Generator().manual_seed(s)) for s in range(5)]
    assert draws == [sample_next(logits, wide, torch.Generator().manual_seed(s)) for s in range(5)]


# -- BatchingEngine ----------------------------------------------------------------------------
def eight_requests() -> list[GenerationRequest]:
    requests = mixed_requests()
    requests += [
        request("extra-1", [Turn("user", "How many objects?", (TWO,))], max_new_tokens=6, temperature=0.7, seed=5),
        request("extra-2", [Turn("user", "ok")], max_new_tokens=9),
        request("extra-3", [Turn("user", "Make a video of a cat.")], max_new_tokens=7, temperature=0.9, top_p=0.8,
                seed=21),
    ]
    assert len(requests) == 8
    return requests


def test_batching_engine_batches_concurrent_requests(engine: HFEngine) -> None:
    requests = eight_requests()
    expected = engine.generate(requests)
    streamed, on_delta = collect_deltas()

    async def run() -> list[GenerationResult]:
        batching = BatchingEngine(engine, max_batch=16)
        try:
            await batching.check_health()
            return await asyncio.gather(*(batching.submit(r, on_delta=on_delta) for r in requests))
        finally:
            stats = batching.stats
            await batching.shutdown()
            assert stats.requests == len(requests)
            assert stats.max_batch_size > 1

    results = asyncio.run(run())
    assert results == expected
    for result in results:
        assert streamed[result.request_id] == result.raw_text


def test_batching_engine_aborts_a_pending_request(engine: HFEngine) -> None:
    requests = eight_requests()[:3]

    async def run() -> tuple[list[GenerationResult], bool]:
        batching = BatchingEngine(engine, max_batch=1)  # one at a time: the last one waits
        tasks = [asyncio.create_task(batching.submit(r)) for r in requests]
        await asyncio.sleep(0)  # let every submit enqueue
        aborted = await batching.abort(requests[-1].request_id)
        results = await asyncio.gather(*tasks)
        await batching.shutdown()
        return results, aborted

    results, aborted = asyncio.run(run())
    assert aborted
    assert results[-1].finish_reason == "abort" and results[-1].completion_tokens == 0
    assert results[:2] == engine.generate(requests[:2])


# -- a real video file -------------------------------------------------------------------------
def test_real_mp4_through_the_default_sampler(tiny_model: GPT4VideoModel, tmp_path: Path) -> None:
    media = pytest.importorskip("tests.media")
    from model.video import sample_frames

    clip = media.make_video(tmp_path / "clip.mp4", frames=16, width=64, height=48)
    broken = media.make_truncated_mp4(tmp_path / "broken.mp4")
    engine = HFEngine(tiny_model)  # decodes with model.video.sample_frames
    ok, bad = engine.generate([
        GenerationRequest("ok", (Turn("user", "Describe the video.", ("clip",)),), SamplingParams(max_new_tokens=4),
                          {"clip": str(clip)}),
        GenerationRequest("bad", (Turn("user", "Describe the video.", ("broken",)),),
                          SamplingParams(max_new_tokens=4), {"broken": str(broken)}),
    ])
    assert ok.finish_reason in ("length", "stop") and ok.completion_tokens > 0
    assert bad.finish_reason == "error" and "broken" in bad.error
    assert bad.error_code == FailureCode.CORRUPT_VIDEO  # the video error's own code
    (gone,) = engine.generate([GenerationRequest(
        "gone", (Turn("user", "Describe the video.", ("gone",)),), SamplingParams(max_new_tokens=4),
        {"gone": str(tmp_path / "deleted.mp4")})])
    assert gone.error_code == FailureCode.VIDEO_MISSING  # a storage fault, not a bad upload
    cfg = tiny_model.vision.cfg
    frames = torch.from_numpy(sample_frames(clip, cfg.num_frames, size=cfg.image_size))[None]  # (1, T, S, S, 3)
    assert frames.shape == (1, cfg.num_frames, cfg.image_size, cfg.image_size, 3)
    with torch.no_grad():
        direct = tiny_model.encode_frames(frames)[0]  # (Nq, D)
    cached = engine.inputs.features.features({"clip": str(clip)})["clip"]  # (Nq, D)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
