"""The `hf` engine: transformers + PEFT, batched, on CPU or GPU.

One `generate` call runs a batch: prompts are rendered to embeddings (video tokens
spliced in), left-padded, prefilled together, then decoded step by step with the KV
cache. Each request samples from its own `torch.Generator`, so a request gives the same
tokens alone or in a batch for the same seed. Decoding stops per request at EOS (the end
of the assistant turn), a stop string, `max_new_tokens`, or `abort`.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from model.engine.base import (
    DeltaCallback,
    EngineUnhealthy,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    VideoInputError,
)
from model.engine.video_features import FeatureCache, FrameSampler, VideoFeatureExtractor
from model.network import GPT4VideoModel
from model.tags import parse_reply

log = logging.getLogger(__name__)


def _default_sampler(path: str, n: int, size: int):
    from model.video import sample_frames

    return sample_frames(path, n, size=size)


def _cache_of(output) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _referenced_videos(req: GenerationRequest) -> dict[str, str]:
    ids = {v for t in req.turns for v in t.videos}
    return {v: p for v, p in req.video_paths.items() if v in ids}


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from `(V,)` logits: greedy at temperature 0, else temperature + top-p."""
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)  # (V,)
        keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p  # (V,) always keeps the top
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class _Row:
    request: GenerationRequest
    generator: torch.Generator
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    streamed: str = ""  # the prefix of `text` already sent to on_delta
    finish: FinishReason | None = None


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    max_batch_size: int = 0


class HFEngine:
    def __init__(
        self,
        model: GPT4VideoModel,
        feature_cache_size: int = 256,
        sampler: FrameSampler | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.model = model.eval()
        config = getattr(model, "config", None)
        fp = fingerprint or (config.fingerprint() if config is not None else "uncached")
        self.features = VideoFeatureExtractor(model, fp, FeatureCache(feature_cache_size),
                                              sampler or _default_sampler)
        self.eos_id = model.tokenizer.eos_token_id
        # transformers renamed `past_key_values` to `cache` (5.2x); accept either release.
        forward_params = inspect.signature(model.llm.get_base_model().forward).parameters
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        self._aborted: set[str] = set()
        self._running: set[str] = set()  # ids of the batch in flight; only those can be aborted
        self._lock = threading.Lock()
        self.stats = BatchStats()

    # -- interface ------------------------------------------------------------------------
    def abort(self, request_id: str) -> bool:
        with self._lock:
            if request_id not in self._running:
                return False
            self._aborted.add(request_id)
        return True

    def check_health(self) -> None:
        try:
            with torch.inference_mode():
                ids = torch.tensor([[self.eos_id]], device=self.model.device)
                self.model.llm(input_ids=ids, use_cache=False)
        except Exception as exc:  # any failure here means the engine cannot serve
            raise EngineUnhealthy(f"hf engine forward failed: {exc}") from exc

    def shutdown(self) -> None:
        self.features.cache = FeatureCache(0)

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
    ) -> list[GenerationResult]:
        if not requests:
            return []
        self.stats.batches += 1
        self.stats.requests += len(requests)
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(requests))
        with self._lock:
            self._running = {req.request_id for req in requests}
        try:
            rows, sequences, failed = self._prepare(requests)
            if sequences:
                self._decode(rows, sequences, on_delta)
        finally:
            with self._lock:
                self._running = set()
                self._aborted.clear()
        results = {r.request.request_id: self._result(r) for r in rows}
        results.update(failed)
        return [results[req.request_id] for req in requests]

    # -- steps ----------------------------------------------------------------------------
    def _prepare(self, requests: Sequence[GenerationRequest]):
        """Render prompts; a request whose video cannot be read fails alone, not the batch."""
        wanted = [_referenced_videos(req) for req in requests]
        merged = {k: v for w in wanted for k, v in w.items()}
        # Each request sees only its own videos: never a neighbour's video under the same id
        # (another path, or one it gave no path for), so a batch gives what each alone gives.
        try:
            if any(merged[k] != v for w in wanted for k, v in w.items()):
                raise VideoInputError("a video id names different files in this batch")
            batch_feats = self.features.features(merged)
            per_request = [{k: batch_feats[k] for k in w} for w in wanted]
        except Exception:  # isolate the bad video: retry one video at a time (cached ones are free)
            per_request = [{} for _ in requests]
            for req, videos, feats in zip(requests, wanted, per_request, strict=True):
                for video_id, path in videos.items():
                    try:
                        feats.update(self.features.features({video_id: path}))
                    except Exception as exc:  # typed video errors and anything the decoder raised
                        log.warning("request %s: video %s unreadable: %s", req.request_id, video_id, exc)
        rows, sequences, failed = [], [], {}
        for req, feats in zip(requests, per_request, strict=True):
            missing = [v for t in req.turns for v in t.videos if v not in feats]
            if missing:
                known = missing[0] in req.video_paths
                err = VideoInputError(
                    f"video {missing[0]} could not be read" if known else f"video {missing[0]} has no path")
                failed[req.request_id] = GenerationResult(
                    req.request_id, "", "", (), 0, 0, "error", error=str(err))
                continue
            seq = self.model.build_sequence(req.turns, feats, add_generation_prompt=True)
            seed = req.sampling.seed if req.sampling.seed is not None else random.getrandbits(63)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            rows.append(_Row(req, gen, prompt_tokens=len(seq.token_ids)))
            sequences.append(seq)
        return rows, sequences, failed

    def _decode(self, rows: list[_Row], sequences, on_delta: DeltaCallback | None) -> None:
        model = self.model
        batch = model.collate(sequences, padding_side="left")
        mask = batch.attention_mask  # (B, L)
        out = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=mask,
                        position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        cache = _cache_of(out)
        logits = out.logits[:, -1, :]  # (B, V)
        positions = batch.position_ids[:, -1]  # (B,)
        max_steps = max(r.request.sampling.max_new_tokens for r in rows)
        for _step in range(max_steps):
            next_ids = []
            for i, row in enumerate(rows):
                if row.finish is None:
                    self._advance(row, logits[i], on_delta)
                next_ids.append(row.tokens[-1] if row.tokens else self.eos_id)
            if all(r.finish is not None for r in rows):
                break
            ids = torch.tensor(next_ids, device=mask.device)[:, None]  # (B, 1)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)  # (B, L+1)
            positions = positions + 1  # (B,)
            out = model.llm(input_ids=ids, attention_mask=mask, position_ids=positions[:, None],
                            use_cache=True, **{self._cache_kw: cache})
            cache = _cache_of(out)
            logits = out.logits[:, -1, :]  # (B, V)
        for row in rows:
            if row.finish is None:
                row.finish = "length"
                self._stream(row, on_delta)

    def _advance(self, row: _Row, logits: torch.Tensor, on_delta: DeltaCallback | None) -> None:
        req = row.request
        with self._lock:
            aborted = req.request_id in self._aborted
        if aborted:
            row.finish = "abort"
            self._stream(row, on_delta)
            return
        token = sample_next(logits, req.sampling, row.generator)
        if token == self.eos_id:
            row.finish = "stop"
            self._stream(row, on_delta)
            return
        row.tokens.append(token)
        text = self.model.tokenizer.decode(row.tokens, skip_special_tokens=True)
        for stop in req.sampling.stop:
            cut = text.find(stop)
            if stop and cut >= 0:
                text = text[:cut]
                row.finish = "stop"
                break
        # Checked before the UTF-8 wait below, or a row whose last allowed token is half a
        # character would run past max_new_tokens (and differ from the same request alone).
        if row.finish is None and len(row.tokens) >= req.sampling.max_new_tokens:
            row.finish = "length"
        if text.endswith("\ufffd") and row.finish is None:
            return  # an incomplete UTF-8 sequence: emit it once it is whole
        row.text = text
        self._stream(row, on_delta)

    @staticmethod
    def _stream(row: _Row, on_delta: DeltaCallback | None) -> None:
        """Send the unsent part of `row.text`. While the row runs, hold back a tail that may
        be the start of a stop string, so the stream never shows text the reply then cuts."""
        if on_delta is None:
            return
        stops = row.request.sampling.stop
        hold = 0 if row.finish else max((len(s) - 1 for s in stops if s), default=0)
        visible = row.text[: max(0, len(row.text) - hold)]
        if len(visible) > len(row.streamed):
            if visible.startswith(row.streamed):
                on_delta(row.request.request_id, visible[len(row.streamed):])
            row.streamed = visible

    def _result(self, row: _Row) -> GenerationResult:
        parsed = parse_reply(row.text)
        return GenerationResult(
            request_id=row.request.request_id, text=parsed.text, raw_text=row.text,
            captions=parsed.captions, prompt_tokens=row.prompt_tokens,
            completion_tokens=len(row.tokens), finish_reason=row.finish or "length",
        )
