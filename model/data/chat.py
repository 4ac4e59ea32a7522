"""`gpt4video data chat`: everyday dialogues answered by the frozen base LLM itself (self-distillation).

Stage 2 mixes these into the video dialogues so the LoRA keeps the base's general
chatting: the targets are what the base already says under the checkpoint's own system
prompt and chat template, so learning them costs the base nothing. Prompts come from
the project's everyday set (`everyday_prompts.jsonl`) and from the moderation prompt
set's benign and look-alike requests ("how do I kill a stuck process?"), each of its
`--split` only. Answers are generated greedily through `HFEngine` with the adapter
disabled; an answer cut off by the token cap is trimmed to its last full sentence, and
answers that carry a video tag are dropped (nobody asked for a video).
The base's raw answers are kept between runs (`model.data.base_answers`), so a rerun
asks it only the prompts it has not answered under the same base and system prompt.

A share of the everyday prompts (`--wrapped-share`) is dressed in the moderation set's
request wrappers ("hey, ...", "..., please", "ok so ..."). The harmful prompts the
refusal dialogues teach carry those wrappers; when no everyday prompt does, the wrapper
itself becomes a cue to refuse ("ok so how do I carve a turkey" was refused as weapons).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from model.data.base_answers import BASE_ANSWERS_DIR, BaseAnswer, BaseAnswerStore, answers_key
from model.data.everyday import EVERYDAY_PATH, everyday_rows
from model.data.instructions import write_jsonl
from model.data.schema import Conversation, Message
from model.engine.base import GenerationRequest, SamplingParams, Turn
from model.network import GPT4VideoModel

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ChatPrompt:
    text: str
    origin: str  # "everyday:<topic>" or "safety:<kind>"


def everyday_prompts(split: str, path: Path = EVERYDAY_PATH) -> list[ChatPrompt]:
    return [ChatPrompt(r.text, f"everyday:{r.topic}") for r in everyday_rows(split, path)]


def with_request_wrappers(prompts: Sequence[ChatPrompt], share: float, seed: int = 0) -> list[ChatPrompt]:
    """`prompts` with about `share` of them wrapped like the moderation set's requests.

    Which prompts and which wrapper depend only on the prompt's text and `seed`, so the
    same prompt is wrapped the same way in every run.
    """
    from model.safety.data.build_prompts import REQUEST_WRAPPERS

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    out = []
    for p in prompts:
        rng = random.Random(hashlib.sha256(f"{seed}|{p.text}".encode()).digest())
        if rng.random() >= share:
            out.append(p)
            continue
        wrapper = rng.choice(REQUEST_WRAPPERS)
        text = p.text.rstrip(" .?!") if wrapper.endswith("thanks") or wrapper.endswith("please") else p.text
        out.append(ChatPrompt(wrapper.format(r=text), p.origin))
    return out


def safety_requests(split: str) -> list[ChatPrompt]:
    """Benign and look-alike *requests* of the moderation set (caption-style ones ask for videos)."""
    from model.safety.data import load_prompts
    from model.safety.refusal_data import lookalike_answers

    return [ChatPrompt(p.text, f"safety:{p.kind}") for p in load_prompts(split=split)  # type: ignore[arg-type]
            if p.kind != "harmful" and p.style == "request" and p.text not in lookalike_answers()]


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")


_FENCE = "```"


def trim_to_sentence(text: str, min_chars: int = 20) -> str | None:
    """The text up to its last sentence end; None when that leaves too little.

    A cut inside a code block keeps the block's full lines and closes it, so no answer
    the model learns from stops in an open block; a block left with no line of code is
    dropped with its opening fence.
    """
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    kept = text[: ends[-1]] if ends else ""
    if kept.count(_FENCE) % 2:
        opening = kept.rfind(_FENCE)
        block = kept[opening: kept.rfind("\n") + 1].rstrip()  # the fence line and the block's full lines
        has_code = bool(block.partition("\n")[2].strip())
        kept = kept[:opening] + block + "\n" + _FENCE if has_code else kept[:opening]
    trimmed = kept.strip()
    return trimmed if len(trimmed) >= min_chars else None


def _answer(model: GPT4VideoModel, prompts: Sequence[str], max_new_tokens: int, batch: int,
            store: BaseAnswerStore | None, progress: bool) -> list[BaseAnswer]:
    """The base's greedy answer to each prompt: from `store` where it has one, else generated (and stored)."""
    from model.engine.hf_engine import HFEngine

    known = {p: a for p in prompts if store is not None and (a := store.get(p)) is not None}
    missing = list(dict.fromkeys(p for p in prompts if p not in known))
    if store is not None:
        log.info("%d of %d prompts answered from %s", len(known), len(set(prompts)), store.path)
    if not missing:
        return [known[p] for p in prompts]
    engine = HFEngine(model)
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    with model.llm.disable_adapter():
        for start in tqdm(range(0, len(missing), batch), desc="base answers", disable=not progress):
            chunk = missing[start:start + batch]
            requests = [GenerationRequest(f"chat-{start + i}", (Turn("user", p),), sampling)
                        for i, p in enumerate(chunk)]
            fresh = {p: BaseAnswer(r.raw_text, r.finish_reason)
                     for p, r in zip(chunk, engine.generate(requests), strict=True)}
            if store is not None:
                store.add(fresh)
            known.update(fresh)
    return [known[p] for p in prompts]


def distill(model: GPT4VideoModel, prompts: Sequence[ChatPrompt], max_new_tokens: int, batch: int,
            progress: bool = True, store: BaseAnswerStore | None = None) -> tuple[list[Conversation], dict[str, int]]:
    """Base-model answers for `prompts` as conversations; counts of what was kept and dropped."""
    answers = _answer(model, [p.text for p in prompts], max_new_tokens, batch, store, progress)
    conversations: list[Conversation] = []
    counts = {"kept": 0, "trimmed": 0, "dropped_tag": 0, "dropped_short": 0}
    for prompt, result in zip(prompts, answers, strict=True):
        if "<video" in result.text:
            counts["dropped_tag"] += 1
            continue
        answer: str | None = result.text.strip()
        if result.finish_reason == "length":
            answer = trim_to_sentence(answer or "")
            counts["trimmed"] += answer is not None
        if not answer:
            counts["dropped_short"] += 1
            continue
        counts["kept"] += 1
        conversations.append(Conversation(
            id=f"chat-{len(conversations):06d}", source="chat",
            messages=[Message(role="user", content=prompt.text), Message(role="assistant", content=answer)]))
    return conversations, counts


def answer_store(checkpoint: Path, model: GPT4VideoModel, max_new_tokens: int,
                 directory: Path) -> BaseAnswerStore | None:
    """The store for this checkpoint's base and system prompt; None for a base given as a directory only."""
    from model.bases import base_spec
    from model.checkpoint import read_config

    llm = read_config(checkpoint).llm
    if llm.base is None:
        log.info("the checkpoint's base LLM is a directory, not a registry base with a sha256: "
                 "its answers are not stored")
        return None
    sha256 = llm.base_sha256 or base_spec(llm.base).gguf_sha256  # what resolve_base loads
    key = answers_key(llm.base, sha256, model.prompt.system, max_new_tokens)
    return BaseAnswerStore(directory / f"{key}.jsonl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video data chat", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a checkpoint on the base LLM (its system prompt and template are used; LoRA off)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--limit", type=int, help="at most this many prompts (everyday ones first)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--wrapped-share", type=float, default=0.5,
                        help="share of everyday prompts wrapped like the moderation set's requests")
    parser.add_argument("--seed", type=int, default=0, help="which prompts are wrapped, and how")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--answers-dir", type=Path, default=BASE_ANSWERS_DIR,
                        help="where the base's answers are kept between runs (model.data.base_answers)")
    parser.add_argument("--no-stored-answers", action="store_true", help="generate every answer afresh")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from model.checkpoint import load_checkpoint

    everyday = with_request_wrappers(everyday_prompts(args.split), args.wrapped_share, args.seed)
    prompts = [*everyday, *safety_requests(args.split)][: args.limit]
    model = load_checkpoint(args.checkpoint)
    store = None if args.no_stored_answers else answer_store(args.checkpoint, model, args.max_new_tokens,
                                                              args.answers_dir)
    conversations, counts = distill(model, prompts, args.max_new_tokens, args.batch, not args.no_progress, store)
    write_jsonl(iter(conversations), args.out)
    print(f"{len(conversations)} chat dialogues from {len(prompts)} prompts -> {args.out} "
          + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
