"""Attribute questions about a shapes video, their reference answers, and a caption parser.

Shared by the instruction builder (training answers) and `gpt4video eval` (the same
questions asked of held-out videos, replies scored by the words they contain).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from model.data.shapes import COLOURS, MOTION_PHRASE, MOTIONS, SHAPES, ShapeObject, ShapesRecord

Attribute = Literal["shape", "colour", "motion", "count"]
ATTRIBUTES: tuple[Attribute, ...] = ("shape", "colour", "motion", "count")
COUNT_WORDS = {1: "one", 2: "two"}
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


@dataclass(frozen=True)
class ObjectTriple:
    colour: str
    shape: str
    motion: str


def _subject(record: ShapesRecord, obj: ShapeObject) -> tuple[str, str]:
    """How a question names `obj` and how the answer starts, without giving the answer away."""
    if len(record.objects) == 1:
        return "the object", "It"
    return f"the {obj.shape}", f"The {obj.shape}"


def shape_question(record: ShapesRecord, obj: ShapeObject, variant: int = 0) -> AttributeQuestion:
    if len(record.objects) == 1:
        q = ("What shape is the object?", "What shape do you see in the video?")[variant % 2]
        return AttributeQuestion("shape", q, f"It is a {obj.shape}.", obj.shape)
    q = (f"What shape is the {obj.colour} object?", f"Which shape is {obj.colour}?")[variant % 2]
    return AttributeQuestion("shape", q, f"The {obj.colour} object is a {obj.shape}.", obj.shape)


def colour_question(record: ShapesRecord, obj: ShapeObject, variant: int = 0) -> AttributeQuestion:
    name, start = _subject(record, obj)
    q = (f"What colour is {name}?", f"Which colour does {name} have?")[variant % 2]
    return AttributeQuestion("colour", q, f"{start} is {obj.colour}.", obj.colour)


def motion_question(record: ShapesRecord, obj: ShapeObject, variant: int = 0) -> AttributeQuestion:
    name, start = _subject(record, obj)
    q = (f"How does {name} move?", f"Which way does {name} go?")[variant % 2]
    return AttributeQuestion("motion", q, f"{start} {MOTION_PHRASE[obj.motion]}.", obj.motion)


def count_question(record: ShapesRecord, variant: int = 0) -> AttributeQuestion:
    n = len(record.objects)
    q = ("How many objects are in the video?", "How many shapes can you see?")[variant % 2]
    a = "There is one object." if n == 1 else f"There are {COUNT_WORDS[n]} objects."
    return AttributeQuestion("count", q, a, COUNT_WORDS[n])


def attribute_question(
    record: ShapesRecord, attribute: Attribute, rng: np.random.Generator | None = None
) -> AttributeQuestion:
    """One question about `attribute`; random object and wording with `rng`, else the first."""
    variant = int(rng.integers(0, 2)) if rng is not None else 0
    obj = record.objects[int(rng.integers(0, len(record.objects)))] if rng is not None else record.objects[0]
    if attribute == "count":
        return count_question(record, variant)
    builder = {"shape": shape_question, "colour": colour_question, "motion": motion_question}[attribute]
    return builder(record, obj, variant)


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
