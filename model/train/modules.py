"""The per-stage training objectives as modules whose `forward(items)` returns the loss.

Wrapping each objective in a module keeps DDP (multi-GPU) correct: gradients are
synchronised through `forward`, so the loss must be computed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from torch import nn

from model.engine.base import Turn
from model.network import GPT4VideoModel
from model.train.data import DialogueItem, FeatureStore, FrameStore, all_videos


class DialogueLoss(nn.Module):
    """Stages 1 and 2: next-token loss on assistant text, video tokens from the abstractor.

    With a frozen vision tower the frame tokens come from the `FeatureStore` (computed once);
    when the tower is trainable (`model.vision.trainable`, stage 1 `--train-vision`) they
    are recomputed from the decoded frames every step, so the caption loss reaches it.
    """

    def __init__(self, model: GPT4VideoModel, features: FeatureStore, vision_lr: float | None = None,
                 opening_tokens: int = 0, opening_weight: float = 1.0, per_turn: bool = False) -> None:
        super().__init__()
        self.model = model
        self.features = features
        self.vision_lr = vision_lr
        # While training only: validation losses stay the plain mean, comparable across runs.
        self.opening_tokens = opening_tokens
        self.opening_weight = opening_weight
        self.per_turn = per_turn

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the vision tower (if trainable) at its own learning rate."""
        vision = [p for p in self.model.vision.parameters() if p.requires_grad]
        vision_ids = {id(p) for p in vision}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in vision_ids]
        groups = [{"params": rest, "lr": lr}]
        if vision:
            groups.append({"params": vision, "lr": self.vision_lr if self.vision_lr is not None else lr})
        return groups

    def video_features(self, videos: Sequence[str]) -> torch.Tensor:
        if not self.model.vision.trainable:
            return self.features.get(videos)  # (V, T, P, C)
        frames = torch.from_numpy(np.stack([self.features.frames.get(v) for v in videos]))  # (V, T, S, S, 3)
        return self.model.vision(frames.to(self.model.device))  # (V, T, P, C)

    def forward(self, items: Sequence[DialogueItem]) -> torch.Tensor:
        videos = all_videos(items)
        video_tokens: dict[str, torch.Tensor] = {}
        if videos:
            fv = self.video_features(videos)  # (V, T, P, C)
            tokens = self.model.abstractor(fv)  # (V, Nq, D_llm)
            video_tokens = dict(zip(videos, tokens, strict=True))
        sequences = [self.model.build_sequence(it.turns, video_tokens, add_generation_prompt=False)
                     for it in items]
        batch = self.model.collate(sequences)
        if self.training:
            return self.model.loss(batch, self.opening_tokens, self.opening_weight, self.per_turn)
        return self.model.loss(batch)


@dataclass(frozen=True)
class FrameTextGroup:
    """Stage 0 vision item: frames sharing one caption (one drawn per batch).

    Members are (video path, sampled-frame index); index -1 draws any frame of the video.
    """

    text: str
    frames: tuple[tuple[str, int], ...]


class ClipContrastive(nn.Module):
    """Stage 0: open_clip's contrastive loss between single frames and their captions.

    Each item is a caption group, so a batch never holds the same caption twice (which
    would make a 'negative' identical to the positive).
    """

    def __init__(self, model: GPT4VideoModel, frames: FrameStore, context_length: int, seed: int = 0) -> None:
        super().__init__()
        self.vision = model.vision
        self.clip = model.vision.clip
        self.frames = frames
        self.context_length = context_length
        self.loss_fn = ClipLoss()
        self._rng = np.random.default_rng(seed)

    def forward(self, items: Sequence[FrameTextGroup]) -> torch.Tensor:
        device = self.clip.logit_scale.device
        pixels = []
        for group in items:
            video, k = group.frames[int(self._rng.integers(0, len(group.frames)))]
            clip_frames = self.frames.get(video)  # (T, S, S, 3)
            pixels.append(clip_frames[k if k >= 0 else int(self._rng.integers(0, len(clip_frames)))])
        frames = torch.from_numpy(np.stack(pixels)).to(device)  # (B, S, S, 3) uint8
        images = self.vision.preprocess(frames)  # (B, 3, S, S)
        text = open_clip.tokenize([g.text for g in items], context_length=self.context_length).to(device)
        image_features = self.clip.encode_image(images, normalize=True)  # (B, E)
        text_features = self.clip.encode_text(text, normalize=True)  # (B, E)
        return self.loss_fn(image_features, text_features, self.clip.logit_scale.exp())


class GroundedTextLoss(nn.Module):
    """Stage 0: the base LLM (LoRA bypassed) on dialogues whose videos are given as text.

    Each video is written into its user turn as its caption in brackets, and the loss is
    on assistant text only (the labels of stage 2), so every target token can be read off
    the context. Plain next-token loss on captions would ask the LLM to guess what only
    the video shows ("moves to the ___"); the cheapest answer to such a guess is to make
    the output rows of the alternatives equal (measured: cos(left, right) of the LM head
    0.996 after one such run), after which no video can make the LLM say one, not the other.
    """

    def __init__(self, model: GPT4VideoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, dialogues: Sequence[Sequence[Turn]]) -> torch.Tensor:
        with self.model.llm.disable_adapter():
            sequences = [self.model.build_sequence(turns, {}, add_generation_prompt=False) for turns in dialogues]
            return self.model.loss(self.model.collate(sequences))
