"""The `hf` engine: transformers + PEFT, batched, on CPU or GPU.

One `generate` call runs a batch: prompts are rendered to embeddings (video tokens
spliced in), left-padded, prefilled together, then decoded step by step with the KV
cache. Each request samples from its own `torch.Generator`, so a request gives the same
tokens alone or in a batch for the same seed. Decoding stops per request at EOS (the end
of the assistant turn), a stop string, `max_new_tokens` (or the end of the model's
context), or `abort`. A request that cannot be served fails alone with its `FailureCode`;
running out of memory fails the batch as `engine_overloaded`.
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
    FailureCode,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    RequestError,
    SamplingParams,
)
from model.engine.feature_store import FeatureStore
from model.engine.inputs import RequestInputs, check_context
from model.engine.video_features import FeatureCache, FrameSampler
from model.network import GPT4VideoModel
from model.tags import parse_reply
from model.video.sampling import SamplingOptions

log = logging.getLogger(__name__)


def _cache_of(output) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token from `(V,)` logits: greedy at temperature 0, else temperature + top-p."""
    if params.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)  # (V,)
        keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p  # (V,)
        keep[0] = True  # the top token, even for a top_p below float32's smallest (5e-324 is 0 there)
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class _Row:
    request: GenerationRequest
    generator: torch.Generator
    prompt_tokens: int
    max_new_tokens: int  # the request's, lowered to what the model's context leaves
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    streamed: str = ""  # the prefix of `text` already sent to on_delta
    finish: FinishReason | None = None


class HFEngine:
    def __init__(
        self,
        model: GPT4VideoModel,
        feature_cache_size: int = 256,
        sampler: FrameSampler | None = None,
        fingerprint: str | None = None,
        feature_store: FeatureStore | None = None,
        sampling: SamplingOptions = SamplingOptions(),
    ) -> None:
        self.model = model.eval()
        self.inputs = RequestInputs.for_model(model, feature_cache_size, sampler, fingerprint, feature_store, sampling)
        self.eos_id = model.tokenizer.eos_token_id
        base = model.llm.get_base_model()
        self.context_len: int = base.config.max_position_embeddings  # prompt + reply, in tokens
        # transformers renamed `past_key_values` to `cache` (5.2x); accept either release.
        self._cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self._aborted: set[str] = set()
        self._running: set[str] = set()  # ids of the batch in flight; only those can be aborted
        self._lock = threading.Lock()

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
        self.inputs.features.cache = FeatureCache(0)

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenerationRequest], on_delta: DeltaCallback | None = None
    ) -> list[GenerationResult]:
        if not requests:
            return []
        with self._lock:
            self._running = {req.request_id for req in requests}
        try:
            rows, sequences, failed = self._prepare(requests)
            if sequences:
                self._decode(rows, sequences, on_delta)
        except (torch.OutOfMemoryError, MemoryError) as exc:  # the batch, not a request, is at fault
            log.error("out of memory serving a batch of %d: %s", len(requests), exc)
            overloaded = RequestError(FailureCode.ENGINE_OVERLOADED, (
                f"the engine ran out of memory serving a batch of {len(requests)}: retry shortly, "
                "send a shorter conversation, or lower LLM_MAX_BATCH"))
            return [GenerationResult.failed(req.request_id, overloaded) for req in requests]
        finally:
            with self._lock:
                self._running = set()
                self._aborted.clear()
        results = {r.request.request_id: self._result(r) for r in rows}
        results.update(failed)
        return [results[req.request_id] for req in requests]

    # -- steps ----------------------------------------------------------------------------
    def _prepare(self, requests: Sequence[GenerationRequest]):
        """Render prompts; a request that cannot be served fails alone, not the batch."""
        rows, sequences, failed = [], [], {}
        for req, features in zip(requests, self.inputs.batch_features(requests), strict=True):
            try:
                if isinstance(features, RequestError):
                    raise features
                seq = self.inputs.sequence(req, features)
                check_context(len(seq.token_ids), self.context_len, "use a base LLM with a longer context")
            except RequestError as exc:
                log.warning("request %s failed: %s", req.request_id, exc)
                failed[req.request_id] = GenerationResult.failed(req.request_id, exc)
                continue
            seed = req.sampling.seed if req.sampling.seed is not None else random.getrandbits(63)
            gen = torch.Generator(device="cpu").manual_seed(seed)
            room = self.context_len - len(seq.token_ids)
            rows.append(_Row(req, gen, prompt_tokens=len(seq.token_ids),
                             max_new_tokens=min(req.sampling.max_new_tokens, room)))
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
        max_steps = max(r.max_new_tokens for r in rows)
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
        if row.finish is None and len(row.tokens) >= row.max_new_tokens:
            row.finish = "length"
        if text.endswith("\ufffd"):
            if row.finish is None:
                return  # an incomplete UTF-8 sequence: emit it once it is whole
            # The reply ends inside a character: drop the incomplete bytes, as vLLM's
            # detokenizer does, so both engines give the same text (the tokens still count).
            text = text.rstrip("\ufffd")
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
