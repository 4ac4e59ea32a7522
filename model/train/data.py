"""Training items for the stages: conversations as engine `Turn`s, and cached frame features.

Videos are decoded with the same sampler the server uses (`model.video.sample_frames`,
the checkpoint's frame count and size). The vision tower is frozen in stages 1 and 2,
so its per-patch tokens `Fv (T, P, C)` are computed once a video and kept in memory
(half precision); only the abstractor and the LLM run every step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data.instructions import read_caption_items, read_conversations
from model.data.questions import describe_question
from model.data.schema import Conversation
from model.engine.base import Turn
from model.network import GPT4VideoModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DialogueItem:
    """One training conversation; video ids in `turns` are absolute file paths."""

    turns: tuple[Turn, ...]

    @property
    def videos(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for t in self.turns for v in t.videos))


def to_item(conv: Conversation, root: Path) -> DialogueItem:
    """A schema conversation -> turns whose video ids are paths resolved against `root`."""
    paths = [str((root / v).resolve()) if not Path(v).is_absolute() else v for v in conv.videos]
    return DialogueItem(tuple(
        Turn(role=m.role, content=m.content, videos=tuple(paths[i] for i in m.videos)) for m in conv.messages
    ))


def load_dialogues(path: Path) -> list[DialogueItem]:
    path = Path(path)
    return [to_item(c, path.parent) for c in read_conversations(path)]


def caption_dialogues(captions: Path, video_dir: Path | None = None, seed: int = 0) -> list[DialogueItem]:
    """Video-caption pairs as one-round dialogues ("Describe the video." in the train
    paraphrase families -> caption), for stage 1."""
    captions = Path(captions)
    rng = np.random.default_rng(seed)
    items = read_caption_items(captions, captions.parent, video_dir)
    out = []
    for it in items:
        path = str((captions.parent / it.video).resolve())
        prompt = describe_question(rng)[1]
        out.append(DialogueItem((Turn("user", prompt, (path,)), Turn("assistant", it.caption))))
    return out


def read_frames(path: str, num_frames: int, image_size: int) -> np.ndarray:
    from model.video import sample_frames

    return sample_frames(path, num_frames, size=image_size)  # (T, S, S, 3) uint8


class FrameStore:
    """Decoded frames `(T, S, S, 3)` uint8 per video path, decoded once."""

    def __init__(self, num_frames: int, image_size: int) -> None:
        self.num_frames = num_frames
        self.image_size = image_size
        self._frames: dict[str, np.ndarray] = {}

    def preload(self, paths: Sequence[str], progress: bool = True) -> None:
        for p in tqdm([p for p in dict.fromkeys(paths) if p not in self._frames], desc="decode videos",
                      disable=not progress):
            self._frames[p] = read_frames(p, self.num_frames, self.image_size)

    def get(self, path: str) -> np.ndarray:
        if path not in self._frames:
            self._frames[path] = read_frames(path, self.num_frames, self.image_size)
        return self._frames[path]

    def paths(self) -> list[str]:
        return list(self._frames)


class FeatureStore:
    """Frozen vision-tower tokens `Fv (T, P, C)` per video path, computed once."""

    def __init__(self, model: GPT4VideoModel, frames: FrameStore, batch: int = 32) -> None:
        self.model = model
        self.frames = frames
        self.batch = batch
        self._features: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def preload(self, paths: Sequence[str], progress: bool = True) -> None:
        todo = [p for p in dict.fromkeys(paths) if p not in self._features]
        self.frames.preload(todo, progress)
        for start in tqdm(range(0, len(todo), self.batch), desc="encode frames", disable=not progress):
            chunk = todo[start:start + self.batch]
            frames = torch.from_numpy(np.stack([self.frames.get(p) for p in chunk]))  # (b, T, S, S, 3)
            fv = self.model.vision(frames.to(self.model.device))  # (b, T, P, C)
            for p, f in zip(chunk, fv, strict=True):
                self._features[p] = f.to(torch.float16).cpu()

    def get(self, paths: Sequence[str]) -> torch.Tensor:
        """Stacked float32 features `(V, T, P, C)` on the model's device."""
        missing = [p for p in paths if p not in self._features]
        if missing:
            self.preload(missing, progress=False)
        # Widen before stacking: CPU autocast (bf16) rejects a float16 `stack`.
        return torch.stack([self._features[p].float() for p in paths]).to(self.model.device)


def all_videos(items: Sequence[DialogueItem]) -> list[str]:
    return list(dict.fromkeys(v for it in items for v in it.videos))
