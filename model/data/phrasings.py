"""Paraphrase families of the shapes world's questions and video requests (`phrasings.json`).

Every family is either `train` (training dialogues use it) or `test` (held out: only
`gpt4video eval` asks it), and so is every word list, so the evaluation can tell
generalisation to new wording apart from memory of the templates. Drawing is seeded by
the caller's generator.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from model.data.shapes import ShapeObject, WorldConfig, first_mover, object_names, sample_objects

PHRASINGS_PATH = Path(__file__).with_name("phrasings.json")
PhrasingSplit = Literal["train", "test"]
PHRASING_SPLITS: tuple[PhrasingSplit, ...] = ("train", "test")


class Family(BaseModel):
    family: str
    split: PhrasingSplit
    templates: list[str]


class SplitWords(BaseModel):
    train: list[str]
    test: list[str]


class SplitPhrases(BaseModel):
    train: dict[str, list[str]]  # motion -> phrases
    test: dict[str, list[str]]


class MotionPhrases(BaseModel):
    relative: SplitPhrases
    clause: SplitPhrases
    both_still: SplitWords


class Phrasings(BaseModel):
    vocabulary: dict[str, SplitWords]
    questions: dict[str, dict[str, list[Family]]]  # attribute -> "one" / "two" / "any" -> families
    requests: dict[str, list[Family]]  # "object" / "clause" -> families
    motion_phrases: MotionPhrases
    follow_ups: SplitWords  # prefixes that bring a question back to the uploaded video ("" = none)


@functools.cache
def phrasings(path: Path = PHRASINGS_PATH) -> Phrasings:
    data = json.loads(Path(path).read_text())
    data.pop("_doc", None)
    data["motion_phrases"].pop("_doc", None)
    return Phrasings.model_validate(data)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(0, len(options)))])


def _families(families: Sequence[Family], split: PhrasingSplit) -> list[Family]:
    chosen = [f for f in families if f.split == split]
    if not chosen:
        raise ValueError(f"no {split!r} phrasing family among {[f.family for f in families]}")
    return chosen


def _word(rng: np.random.Generator, slot: str, split: PhrasingSplit) -> str:
    words = phrasings().vocabulary[slot]
    # Held-out wording mixes new words with known ones (a new family alone is one change).
    if split == "test" and words.test and rng.random() < 0.5:
        return _pick(rng, words.test)
    return _pick(rng, words.train)


_SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, rng: np.random.Generator, split: PhrasingSplit, **known: str) -> str:
    """Fill `{slot}`s: given values first, vocabulary slots drawn for `split`."""
    def value(match: re.Match[str]) -> str:
        slot = match.group(1)
        return known[slot] if slot in known else _word(rng, slot, split)

    return _SLOT.sub(value, template)


def draw_template(families: Sequence[Family], rng: np.random.Generator, split: PhrasingSplit) -> tuple[str, str]:
    """(family name, template), uniform over the split's families, then over their templates."""
    family = _families(families, split)[int(rng.integers(0, len(_families(families, split))))]
    return family.family, _pick(rng, family.templates)


def question(attribute: str, rng: np.random.Generator, split: PhrasingSplit, objects: int = 1,
             **known: str) -> tuple[str, str]:
    """(family, question text) asking about `attribute` ("shape", "colour", "motion", "count", "describe")."""
    groups = phrasings().questions[attribute]
    group = groups["any"] if "any" in groups else groups["one" if objects == 1 else "two"]
    family, template = draw_template(group, rng, split)
    return family, fill(template, rng, split, **known)


def motion_phrase(motion: str, rng: np.random.Generator, split: PhrasingSplit, form: str = "relative") -> str:
    phrases: SplitPhrases = getattr(phrasings().motion_phrases, form)
    table = phrases.test if split == "test" else phrases.train
    return _pick(rng, table[motion])


def follow_up_prefix(rng: np.random.Generator, split: PhrasingSplit) -> str:
    """A prefix that points a question back at the uploaded video, e.g. 'About my video: '."""
    words = phrasings().follow_ups
    return _pick(rng, words.test if split == "test" else words.train)


def describe_request_objects(objects: Sequence[ShapeObject], rng: np.random.Generator, split: PhrasingSplit) -> str:
    """'a red circle moving to the left' / 'a blue square and a red circle where the square goes up'."""
    if len(objects) == 1:
        o = objects[0]
        return f"a {o.colour} {o.shape} {motion_phrase(o.motion, rng, split)}"
    names = object_names(objects)
    mover = first_mover(objects)
    if mover is None:
        table = phrasings().motion_phrases.both_still
        return f"{names} {_pick(rng, table.test if split == 'test' else table.train)}"
    if rng.random() < 0.5:
        return f"{names} where the {mover.shape} {motion_phrase(mover.motion, rng, split, 'clause')}"
    ing = [p for p in (phrasings().motion_phrases.relative.test if split == "test"
                       else phrasings().motion_phrases.relative.train)[mover.motion] if not p.startswith("that ")]
    return f"{names}, with the {mover.shape} {_pick(rng, ing)}"


def describe_request_clause(objects: Sequence[ShapeObject], rng: np.random.Generator, split: PhrasingSplit) -> str:
    """'a red circle moves to the left' / 'a red circle and a blue square appear and the square goes up'."""
    if len(objects) == 1:
        o = objects[0]
        return f"a {o.colour} {o.shape} {motion_phrase(o.motion, rng, split, 'clause')}"
    mover = first_mover(objects)
    assert mover is not None, "a clause request needs a moving object"
    return (f"{object_names(objects)} appear and the {mover.shape} "
            f"{motion_phrase(mover.motion, rng, split, 'clause')}")


def video_request(objects: Sequence[ShapeObject], rng: np.random.Generator,
                  split: PhrasingSplit = "train") -> tuple[str, str]:
    """(family, request text) asking for a video of `objects`."""
    requests = phrasings().requests
    clause_ok = len(objects) == 1 or first_mover(objects) is not None
    if clause_ok and rng.random() < 0.3:
        family, template = draw_template(requests["clause"], rng, split)
        return family, fill(template, rng, split, clause=describe_request_clause(objects, rng, split))
    family, template = draw_template(requests["object"], rng, split)
    return family, fill(template, rng, split, what=describe_request_objects(objects, rng, split))


def shapes_world_prompts(split: PhrasingSplit, requests: int = 300, questions_each: int = 50,
                         seed: int = 0) -> list[str]:
    """What a user of the shapes world types, in `split`'s wording: `requests` video requests,
    then `questions_each` shape, colour and motion questions (seeded, so the same every run)."""
    rng = np.random.default_rng(seed)
    world = WorldConfig()
    texts = [video_request(sample_objects(rng, world, world.min_frames), rng, split)[1] for _ in range(requests)]
    for attribute in ("shape", "colour", "motion"):
        texts += [question(attribute, rng, split)[1] for _ in range(questions_each)]
    return texts
