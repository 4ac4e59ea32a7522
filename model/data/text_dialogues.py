"""`gpt4video data text-dialogues`: shapes-world dialogues with the video given as text.

Stage 0 teaches the small LLaMA to answer from what it is shown, with each video written
into the user turn as its caption in brackets (`shown_as_text`). A pretrained LLaMA can
already read "[a blue circle and a red triangle; ...] What colour is the triangle?"; the
tiny one trained here could not (two-object shape and colour answers at chance when
given the caption as text), and no video can teach stage 2 a lookup the LLM cannot do.
These dialogues need no video, so any number can be drawn: objects from the world's
sampler, questions and answers from the template writer the video dialogues use.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from model.data.instructions import write_jsonl
from model.data.schema import Conversation, Message
from model.data.shapes import ShapesRecord, WorldConfig, sample_objects, video_caption
from model.data.writers import CaptionItem, TemplateWriter


def shown_as_text(caption: str) -> str:
    """How a video appears in a text-only dialogue: its caption in brackets, before the message."""
    return f"[{caption}] "


def text_dialogues(count: int, seed: int, world: WorldConfig, writer: TemplateWriter | None = None
                   ) -> Iterator[Conversation]:
    """`count` understanding dialogues about random worlds, each video given as its caption."""
    writer = writer or TemplateWriter(follow_up_generation_prob=0.0, interleaved_generation_prob=0.0)
    rng = np.random.default_rng(seed)
    for i in range(count):
        objects = sample_objects(rng, world, world.min_frames)
        caption = video_caption(objects)
        record = ShapesRecord(id=f"text-{i:07d}", split="train", video="", caption=caption,
                              num_frames=world.min_frames, fps=world.fps, width=world.size, height=world.size,
                              objects=objects)
        messages = writer.single_video(CaptionItem(video="", caption=caption, record=record), rng)
        first = messages[0]
        messages[0] = Message(role="user", content=shown_as_text(caption) + first.content)
        yield Conversation(id=f"text-{i:07d}", source="text_understanding", messages=messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video data text-dialogues", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output conversations .jsonl")
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--two-object-prob", type=float, default=0.5, help="share of two-object worlds")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if not 0.0 <= args.two_object_prob <= 1.0:
        parser.error("--two-object-prob must be between 0 and 1")
    world = dataclasses.replace(WorldConfig(), two_object_prob=args.two_object_prob)
    counts = write_jsonl(text_dialogues(args.count, args.seed, world), args.out)
    print(f"{sum(counts.values())} conversations -> {args.out}")
    return 0
