"""`gpt4video data binding`: two-object dialogues that ask about each object by its other attributes.

A video's six questions are the shape of each object by its colour ("Which shape is
red?"), and the colour and the motion of each by its shape ("How does the square move?");
a dialogue asks 2-4 of them in random order and wording, the first turn showing the video.

The mixed understanding dialogues (`data instructions`) ask about one random object per
attribute: about 0.6 shape questions per two-object video (638 for 1038 such videos in
the shipped recipe's train split). That was too little for "Which shape is red?" from
video tokens: held-out two-object shape answers were at chance (0.48) although the LLM
answered the same question at 0.98 given the caption as text; after a stage-2 run with
these dialogues added, 0.89.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from model.data.instructions import read_caption_items, write_jsonl
from model.data.questions import colour_question, motion_question, shape_question
from model.data.schema import Conversation, Message
from model.data.shapes import ShapesRecord
from model.data.writers import CaptionItem


class BindingDataError(ValueError):
    """The caption file cannot give binding dialogues; the message says what to pass instead."""


def binding_messages(record: ShapesRecord, rng: np.random.Generator) -> list[Message]:
    """2-4 rounds drawn from {shape of each object by colour, colour and motion of each by shape}."""
    questions = []
    for obj in record.objects:
        questions.append(shape_question(record, obj, rng))
        questions.append(colour_question(record, obj, rng))
        questions.append(motion_question(record, obj, rng))
    order = rng.permutation(len(questions))[: int(rng.integers(2, 5))]
    messages: list[Message] = []
    for i, k in enumerate(order):
        messages.append(Message(role="user", content=questions[k].question, videos=[0] if i == 0 else []))
        messages.append(Message(role="assistant", content=questions[k].answer))
    return messages


def binding_dialogues(items: Sequence[CaptionItem], per_video: int, seed: int,
                      prefix: str = "binding") -> Iterator[Conversation]:
    """`per_video` dialogues for every two-object video of `items` (one-object ones have nothing to bind)."""
    if any(it.record is None for it in items):
        raise BindingDataError("binding dialogues need object attributes: pass a shapes .jsonl, not a caption CSV")
    rng = np.random.default_rng(seed)
    n = 0
    for item in items:
        record = item.record
        if record is None or len(record.objects) != 2:
            continue
        for _ in range(per_video):
            n += 1
            yield Conversation(id=f"{prefix}-{n:07d}", source="binding", videos=[item.video],
                               messages=binding_messages(record, rng))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video data binding", description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, required=True, help="shapes .jsonl (attributes needed)")
    parser.add_argument("--out", type=Path, required=True, help="output conversations .jsonl")
    parser.add_argument("--per-video", type=int, default=2, help="dialogues per two-object video")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.captions.suffix != ".jsonl":
        parser.error(f"--captions {args.captions}: binding dialogues need a shapes .jsonl (object attributes)")
    items = read_caption_items(args.captions, args.out.parent)
    counts = write_jsonl(binding_dialogues(items, args.per_video, args.seed, prefix=f"{args.captions.stem}-binding"),
                         args.out)
    print(f"{sum(counts.values())} conversations -> {args.out}")
    return 0
