"""Shapes-world video-caption pairs for text-to-video training, rendered in memory.

A clip is drawn exactly as the shapes world draws a video (`sample_objects`,
`render_frames`), but with a fixed frame count and no MP4 round trip. Its caption is
`caption_for` in the drawn object order, the form the LLM writes into a generation tag
(it keeps the order the user asked in), so both orders of two objects are learned.
Training, validation and evaluation draw from disjoint seed streams: clip `i` of stream
`s` uses the generator seeded by `(STREAM_BASE, s, seed, i)`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from tqdm import tqdm

from model.data.shapes import (
    COLOURS,
    MOTIONS,
    SHAPES,
    ShapeObject,
    WorldConfig,
    caption_for,
    render_frames,
    sample_objects,
)
from model.t2v.tokenizer import caption_words

Stream = Literal["train", "val", "eval"]
STREAMS: tuple[Stream, ...] = ("train", "val", "eval")
STREAM_BASE = 15  # keeps these generators apart from the understanding data's (seed, split, i)


def world_for(size: int, num_frames: int, two_object_prob: float = 0.3) -> WorldConfig:
    """The shapes world at `size` pixels with exactly `num_frames` frames a clip."""
    return WorldConfig(size=size, min_frames=num_frames, max_frames=num_frames, two_object_prob=two_object_prob)


@dataclass(frozen=True)
class Clip:
    caption: str
    objects: tuple[ShapeObject, ...]
    frames: np.ndarray  # (T, S, S, 3) uint8


def clip_rng(stream: Stream, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([STREAM_BASE, STREAMS.index(stream), seed, index])


def sample_clip(stream: Stream, seed: int, index: int, world: WorldConfig) -> Clip:
    rng = clip_rng(stream, seed, index)
    objects = sample_objects(rng, world, world.min_frames)
    frames = render_frames(objects, world.min_frames, world, rng)  # (T, S, S, 3)
    return Clip(caption_for(objects), tuple(objects), frames)


def render_clip(objects: Sequence[ShapeObject], world: WorldConfig, seed: int) -> np.ndarray:
    """Frames `(T, S, S, 3)` of given objects (e.g. the ceiling video for an eval caption)."""
    return render_frames(list(objects), world.min_frames, world, np.random.default_rng([STREAM_BASE, 99, seed]))


@dataclass(frozen=True)
class ClipSet:
    captions: list[str]
    frames: np.ndarray  # (N, T, S, S, 3) uint8


def render_clips(stream: Stream, seed: int, count: int, world: WorldConfig, progress: bool = True) -> ClipSet:
    frames = np.empty((count, world.min_frames, world.size, world.size, 3), dtype=np.uint8)  # (N, T, S, S, 3)
    captions = []
    for i in tqdm(range(count), desc=f"render {stream} clips", disable=not progress):
        clip = sample_clip(stream, seed, i, world)
        frames[i] = clip.frames
        captions.append(clip.caption)
    return ClipSet(captions, frames)


def grammar_objects() -> list[list[ShapeObject]]:
    """Every caption's objects, motion and placement left out: one object, then two (both orders)."""
    def obj(shape: str, colour: str, motion: str) -> ShapeObject:
        return ShapeObject(shape=shape, colour=colour, motion=motion, size=1.0, speed=0.0,
                           start=(0.0, 0.0), end=(0.0, 0.0))

    singles = [[obj(s, c, m)] for s, c, m in itertools.product(SHAPES, COLOURS, MOTIONS)]
    pairs = []
    for (s1, s2), (c1, c2) in itertools.product(itertools.permutations(SHAPES, 2), itertools.permutations(COLOURS, 2)):
        for mover, motion in [(None, "still"), *itertools.product((0, 1), MOTIONS[:4])]:
            motions = ["still", "still"]
            if mover is not None:
                motions[mover] = motion
            pairs.append([obj(s1, c1, motions[0]), obj(s2, c2, motions[1])])
    return singles + pairs


@lru_cache(maxsize=1)
def grammar_words() -> tuple[str, ...]:
    """Every word the shapes caption grammar can write, for the tokenizer's vocabulary."""
    return tuple(caption_words(caption_for(objects) for objects in grammar_objects()))
