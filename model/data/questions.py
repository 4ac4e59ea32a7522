"""Attribute questions about a shapes video, their reference answers, and a caption parser.

Shared by the instruction builder (training answers) and `gpt4video eval` (the same
questions asked of held-out videos, replies scored by the words they contain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.data.phrasings import PhrasingSplit, question
from model.data.shapes import COLOURS, MOTION_PHRASE, MOTIONS, SHAPES, ShapeObject, ShapesRecord

Attribute = Literal["shape", "colour", "motion", "count"]
ATTRIBUTES: tuple[Attribute, ...] = ("shape", "colour", "motion", "count")
COUNT_WORDS = {1: "one", 2: "two"}
# The canonical describe prompts (stage 0's text corpus cycles through them); dialogues
# draw their wording from the paraphrase families (`model.data.phrasings`).
DESCRIBE_PROMPTS = (
    "Describe the video.",
    "What happens in the video?",
    "Give a short caption for this video.",
)


@dataclass(frozen=True)
class AttributeQuestion:
    attribute: Attribute
    question: str
    answer: str
    expected: str  # the one attribute word a correct reply contains ("red", "left", "two", ...)
    family: str = ""  # the paraphrase family the wording came from


@dataclass(frozen=True)
class ObjectTriple:
    colour: str
    shape: str
    motion: str


def _start(record: ShapesRecord, obj: ShapeObject) -> str:
    """How the answer names `obj`: "It" alone, "The square" beside another object."""
    return "It" if len(record.objects) == 1 else f"The {obj.shape}"


def shape_question(record: ShapesRecord, obj: ShapeObject, rng: np.random.Generator,
                   split: PhrasingSplit = "train") -> AttributeQuestion:
    """Beside another object, the shape is asked by the object's colour (its shape would give it away)."""
    family, q = question("shape", rng, split, len(record.objects), colour=obj.colour)
    if len(record.objects) == 1:
        return AttributeQuestion("shape", q, f"It is a {obj.shape}.", obj.shape, family)
    return AttributeQuestion("shape", q, f"The {obj.colour} object is a {obj.shape}.", obj.shape, family)


def colour_question(record: ShapesRecord, obj: ShapeObject, rng: np.random.Generator,
                    split: PhrasingSplit = "train") -> AttributeQuestion:
    family, q = question("colour", rng, split, len(record.objects), shape=obj.shape)
    return AttributeQuestion("colour", q, f"{_start(record, obj)} is {obj.colour}.", obj.colour, family)


def motion_question(record: ShapesRecord, obj: ShapeObject, rng: np.random.Generator,
                    split: PhrasingSplit = "train") -> AttributeQuestion:
    family, q = question("motion", rng, split, len(record.objects), shape=obj.shape)
    answer = f"{_start(record, obj)} {MOTION_PHRASE[obj.motion]}."
    return AttributeQuestion("motion", q, answer, obj.motion, family)


def count_question(record: ShapesRecord, rng: np.random.Generator, split: PhrasingSplit = "train") -> AttributeQuestion:
    n = len(record.objects)
    family, q = question("count", rng, split)
    a = "There is one object." if n == 1 else f"There are {COUNT_WORDS[n]} objects."
    return AttributeQuestion("count", q, a, COUNT_WORDS[n], family)


def describe_question(rng: np.random.Generator, split: PhrasingSplit = "train") -> tuple[str, str]:
    """(family, a request to describe the video)."""
    return question("describe", rng, split)


def attribute_question(
    record: ShapesRecord, attribute: Attribute, rng: np.random.Generator | None = None,
    split: PhrasingSplit = "train",
) -> AttributeQuestion:
    """One question about `attribute` in `split`'s wording; a random object with `rng`, else the first."""
    obj = record.objects[int(rng.integers(0, len(record.objects)))] if rng is not None else record.objects[0]
    rng = rng if rng is not None else np.random.default_rng(0)
    if attribute == "count":
        return count_question(record, rng, split)
    builder = {"shape": shape_question, "colour": colour_question, "motion": motion_question}[attribute]
    return builder(record, obj, rng, split)


# -- scoring ---------------------------------------------------------------------------
_WORDS = re.compile(r"[a-z]+")
VOCABULARY: dict[Attribute, tuple[str, ...]] = {
    "shape": SHAPES, "colour": COLOURS, "motion": MOTIONS, "count": tuple(COUNT_WORDS.values()),
}


def words_of(text: str, attribute: Attribute) -> set[str]:
    vocab = set(VOCABULARY[attribute])
    return {w for w in _WORDS.findall(text.lower()) if w in vocab}


def answer_is_correct(reply: str, question: AttributeQuestion) -> bool:
    """Correct when the reply names the expected value and no other value of that attribute."""
    return words_of(reply, question.attribute) == {question.expected}


_ONE = re.compile(r"^a (\w+) (\w+) (moves to the left|moves to the right|moves up|moves down|stays still)$")
_TWO = re.compile(
    r"^a (\w+) (\w+) and a (\w+) (\w+); "
    r"(?:the (\w+) (moves to the left|moves to the right|moves up|moves down)|both stay still)$"
)
_PHRASE_TO_MOTION = {phrase: motion for motion, phrase in MOTION_PHRASE.items()}


def parse_caption(caption: str) -> frozenset[ObjectTriple] | None:
    """A caption of the shapes grammar -> its objects; None when it does not parse."""
    text = re.sub(r"\s+", " ", caption.strip().lower()).rstrip(".")
    m = _ONE.match(text)
    if m:
        colour, shape, phrase = m.groups()
        if colour in COLOURS and shape in SHAPES:
            return frozenset({ObjectTriple(colour, shape, _PHRASE_TO_MOTION[phrase])})
        return None
    m = _TWO.match(text)
    if not m:
        return None
    c1, s1, c2, s2, mover, phrase = m.groups()
    if {c1, c2} - set(COLOURS) or {s1, s2} - set(SHAPES) or s1 == s2:
        return None
    if mover is not None and mover not in (s1, s2):
        return None
    motion = {s1: "still", s2: "still"}
    if mover is not None:
        motion[mover] = _PHRASE_TO_MOTION[phrase]
    return frozenset({ObjectTriple(c1, s1, motion[s1]), ObjectTriple(c2, s2, motion[s2])})


def triples_of(record: ShapesRecord) -> frozenset[ObjectTriple]:
    return frozenset(ObjectTriple(o.colour, o.shape, o.motion) for o in record.objects)
