"""GPT4VideoModel: frames -> CLIP tokens -> abstractor -> video tokens spliced into the LLM.

Read top to bottom: `encode_frames` (vision + abstractor), `build_sequence` (one
conversation -> embeddings with video tokens at their placeholders, and labels),
`collate` (pad a batch), `loss` (training forward).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from model.abstractor import VideoAbstractor
from model.engine.base import Turn
from model.prompt import PromptConfig, Segment, render
from model.vision import FrameEncoder

IGNORE_INDEX = -100
VIDEO_TOKEN = -1  # marks video positions in `SequenceInputs.token_ids`


class MissingVideoFeatures(KeyError):
    """A turn references a video whose features were not supplied."""


@dataclass
class SequenceInputs:
    """One rendered conversation, ready to batch."""

    inputs_embeds: torch.Tensor  # (L, D)
    labels: torch.Tensor  # (L,) token id on assistant text, IGNORE_INDEX elsewhere
    token_ids: list[int]  # (L,) token ids, VIDEO_TOKEN at video positions
    video_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) each video


@dataclass
class Batch:
    inputs_embeds: torch.Tensor  # (B, L, D)
    attention_mask: torch.Tensor  # (B, L) 1 real, 0 padding
    position_ids: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L)


def run_starts(labelled: torch.Tensor) -> torch.Tensor:
    """`(B, L)` bool -> `(B, L)` bool: True at the first position of each run of labelled positions."""
    previous = nn.functional.pad(labelled[:, :-1], (1, 0), value=False)  # (B, L)
    return labelled & ~previous


def opening_token_weights(labelled: torch.Tensor, first: int, weight: float) -> torch.Tensor:
    """`(B, L)` bool, True on labelled positions -> `(B, L)` float weights: `weight` on the
    first `first` positions of each run of labelled positions (an assistant turn's opening),
    1 elsewhere."""
    count = labelled.long().cumsum(dim=1)  # (B, L): labelled positions up to here
    starts = run_starts(labelled)  # (B, L)
    before = torch.where(starts, count - 1, torch.zeros_like(count)).cummax(dim=1).values  # (B, L)
    position = count - 1 - before  # (B, L): index inside the current run
    opening = labelled & (position < first)  # (B, L)
    return 1.0 + (weight - 1.0) * opening.float()


def labelled_run_ids(labelled: torch.Tensor) -> torch.Tensor:
    """`(B, L)` bool -> `(B, L)` long: the index of the run of labelled positions (an assistant
    turn) each position is in, counted over the whole batch in row order; -1 off the runs."""
    starts = run_starts(labelled)  # (B, L)
    ids = (starts.flatten().long().cumsum(0) - 1).view_as(labelled)  # (B, L)
    return torch.where(labelled, ids, torch.full_like(ids, -1))


class GPT4VideoModel(nn.Module):
    def __init__(
        self,
        vision: FrameEncoder,
        abstractor: VideoAbstractor,
        llm: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        prompt: PromptConfig,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.abstractor = abstractor
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt = prompt
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; the assistant turn cannot end")

    @property
    def device(self) -> torch.device:
        return self.abstractor.out_proj.weight.device

    @property
    def num_video_tokens(self) -> int:
        return self.abstractor.cfg.num_tokens

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids)  # (..., D)

    # -- 1. video -> tokens --------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames `(B, T, H, W, 3)` -> F_video `(B, Nt+Ns, D_llm)`."""
        fv = self.vision(frames.to(self.device))  # (B, T, P, C)
        fv = fv.to(self.abstractor.input_proj.weight.dtype)
        return self.abstractor(fv)  # (B, Nq, D_llm)

    # -- 2. conversation -> embeddings + labels ---------------------------------------------
    def tokenize_segments(self, segments: Sequence[Segment]) -> list[tuple[Segment, list[int]]]:
        out = []
        for seg in segments:
            if seg.kind == "text":
                out.append((seg, self.tokenizer.encode(seg.text, add_special_tokens=False)))
            elif seg.kind == "eos":
                out.append((seg, [self.tokenizer.eos_token_id]))
            else:
                out.append((seg, []))
        return out

    def build_sequence(
        self,
        turns: Sequence[Turn],
        video_features: Mapping[str, torch.Tensor],
        add_generation_prompt: bool,
    ) -> SequenceInputs:
        """Video features are `(Nq, D_llm)` each, keyed by the ids the turns reference."""
        # The chat template writes whatever the base needs at the start (BOS included).
        segments = render(turns, self.prompt, self.tokenizer, add_generation_prompt)
        pieces: list[torch.Tensor] = []
        labels: list[int] = []
        token_ids: list[int] = []
        spans: list[tuple[int, int]] = []
        pending: list[int] = []

        def flush() -> None:
            if pending:
                ids = torch.tensor(pending, dtype=torch.long, device=self.device)
                pieces.append(self.embed_tokens(ids))  # (n, D)
                pending.clear()

        for seg, ids in self.tokenize_segments(segments):
            if seg.kind == "video":
                if seg.video_id not in video_features:
                    raise MissingVideoFeatures(seg.video_id)
                flush()
                feats = video_features[seg.video_id]  # (Nq, D)
                start = len(token_ids)
                pieces.append(feats.to(self.device, self.llm.get_input_embeddings().weight.dtype))
                token_ids.extend([VIDEO_TOKEN] * feats.shape[0])
                labels.extend([IGNORE_INDEX] * feats.shape[0])
                spans.append((start, len(token_ids)))
                continue
            pending.extend(ids)
            token_ids.extend(ids)
            labels.extend(ids if seg.trainable else [IGNORE_INDEX] * len(ids))
        flush()
        embeds = torch.cat(pieces, dim=0)  # (L, D)
        return SequenceInputs(
            inputs_embeds=embeds,
            labels=torch.tensor(labels, dtype=torch.long, device=self.device),
            token_ids=token_ids,
            video_spans=spans,
        )

    def prompt_embeds(
        self, turns: Sequence[Turn], video_features: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """The prompt for generation as embeddings `(L, D)` (what vLLM's prompt_embeds takes)."""
        return self.build_sequence(turns, video_features, add_generation_prompt=True).inputs_embeds

    # -- 3. batch ------------------------------------------------------------------------
    @staticmethod
    def collate(sequences: Sequence[SequenceInputs], padding_side: str = "right") -> Batch:
        """Pad to the longest; left padding for generation, right for training."""
        longest = max(s.inputs_embeds.shape[0] for s in sequences)
        dim = sequences[0].inputs_embeds.shape[1]
        ref = sequences[0].inputs_embeds
        b = len(sequences)
        embeds = ref.new_zeros((b, longest, dim))  # (B, L, D)
        mask = torch.zeros((b, longest), dtype=torch.long, device=ref.device)  # (B, L)
        labels = torch.full((b, longest), IGNORE_INDEX, dtype=torch.long, device=ref.device)
        for i, s in enumerate(sequences):
            n = s.inputs_embeds.shape[0]
            sl = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
            embeds[i, sl] = s.inputs_embeds
            mask[i, sl] = 1
            labels[i, sl] = s.labels
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
        return Batch(embeds, mask, position_ids, labels)

    # -- 4. training forward ------------------------------------------------------------
    def loss(self, batch: Batch, opening_tokens: int = 0, opening_weight: float = 1.0,
             per_turn: bool = False) -> torch.Tensor:
        """Mean next-token loss over assistant text tokens only.

        The LM head runs only where a label follows: with a 49k vocabulary it would
        otherwise cost as much as several decoder layers on every prompt position.
        With `opening_tokens` > 0 the first that many tokens of each assistant turn count
        `opening_weight` times (a weighted mean): whether a turn refuses, answers or
        writes a video tag is decided there, and in a plain mean those few tokens are
        outweighed by the long, easy rest of every reply.
        With `per_turn` every assistant turn counts the same, whatever its length: the
        (weighted) mean of each turn's tokens, then the mean over turns. In a token mean a
        60-token chat answer outweighs a 6-token answer about a video ("It moves to the
        left.") ten times over.
        """
        causal_lm = self.llm.get_base_model()  # LoRA layers are injected in place: still applied
        hidden = causal_lm.model(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state  # (B, L, D)
        targets = batch.labels[:, 1:]  # (B, L-1)
        where = targets != IGNORE_INDEX  # (B, L-1)
        logits = causal_lm.lm_head(hidden[:, :-1][where]).float()  # (N, V)
        per_token = nn.functional.cross_entropy(logits, targets[where], reduction="none")  # (N,)
        weighted = opening_tokens > 0 and opening_weight != 1.0
        if not weighted and not per_turn:
            return per_token.mean()
        weights = (opening_token_weights(where, opening_tokens, opening_weight)[where] if weighted
                   else torch.ones_like(per_token))  # (N,)
        if not per_turn:
            return (weights * per_token).sum() / weights.sum()
        turn = labelled_run_ids(where)[where]  # (N,) which assistant turn each token belongs to
        turns = int(turn.max()) + 1
        turn_weight = torch.zeros(turns, dtype=weights.dtype, device=weights.device).index_add_(0, turn, weights)
        return (weights / turn_weight[turn] * per_token).sum() / turns

    def set_training_mode(
        self, train_abstractor: bool = True, train_lora: bool = True, train_vision: bool = False
    ) -> None:
        """Freeze everything but the abstractor, the LoRA matrices and/or the vision tower."""
        self.requires_grad_(False)
        self.vision.freeze()
        if train_vision:
            self.vision.trainable = True
            self.vision.clip.visual.requires_grad_(True)  # the text tower has no part in dialogues
            self.vision.clip.train()
        if train_abstractor:
            self.abstractor.requires_grad_(True)
        if train_lora:
            for name, param in self.llm.named_parameters():
                if "lora_" in name:
                    param.requires_grad_(True)

    def trainable_parts(self) -> list[str]:
        """The parts with a trainable parameter, for progress bars and logs."""
        parts = {"vision": self.vision, "abstractor": self.abstractor, "llm": self.llm}
        names = [name for name, part in parts.items() if any(p.requires_grad for p in part.parameters())]
        return ["lora" if n == "llm" and self._only_lora_trains() else n for n in names]

    def _only_lora_trains(self) -> bool:
        return all("lora_" in n for n, p in self.llm.named_parameters() if p.requires_grad)

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]
