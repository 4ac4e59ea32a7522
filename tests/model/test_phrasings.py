"""Paraphrase families (`model.data.phrasings`): templates fill, and train wording never leaks test wording."""

from __future__ import annotations

import difflib
import functools
import re

import numpy as np
import pytest

from model.data.phrasings import fill, phrasings, question, shapes_world_prompts, video_request
from model.data.questions import ATTRIBUTES, answer_is_correct, attribute_question
from model.data.shapes import ShapeObject, ShapesRecord, WorldConfig, sample_objects, sample_video

KNOWN = {"colour": "red", "shape": "circle", "what": "a red circle moving left", "clause": "a red circle moves left"}
LEFTOVER = re.compile(r"[{}]")
DRAWS = 300


def all_families():
    p = phrasings()
    for attribute, groups in p.questions.items():
        for group, families in groups.items():
            yield f"questions.{attribute}.{group}", families
    for kind, families in p.requests.items():
        yield f"requests.{kind}", families


def family_ids() -> list[str]:
    return [where for where, _ in all_families()]


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_template_fills_without_leftover_slots(split: str) -> None:
    rng = np.random.default_rng(0)
    count = 0
    for where, families in all_families():
        for family in families:
            for template in family.templates:
                for _ in range(4):
                    text = fill(template, rng, split, **KNOWN)  # type: ignore[arg-type]
                    assert not LEFTOVER.search(text), (where, family.family, text)
                    assert text.strip() == text and text, (where, template)
                count += 1
    assert count > 50


@pytest.mark.parametrize("where", family_ids())
def test_train_and_test_family_names_do_not_overlap(where: str) -> None:
    families = dict(all_families())[where]
    train = {f.family for f in families if f.split == "train"}
    test = {f.family for f in families if f.split == "test"}
    assert train and test, where  # both splits exist, so both can be drawn
    assert not train & test
    assert len({f.family for f in families}) == len(families)  # no name used twice


def test_vocabulary_splits_are_disjoint() -> None:
    for slot, words in phrasings().vocabulary.items():
        assert words.train, slot
        assert not set(words.train) & set(words.test), slot


def _words_pattern(words: set[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words)) + r")\b", re.IGNORECASE)


@functools.cache
def held_out_phrases() -> tuple[str, ...]:
    """Test-only motion phrases that no train phrase or train template contains."""
    m = phrasings().motion_phrases
    train_texts = [p for table in (m.relative.train, m.clause.train) for ps in table.values() for p in ps]
    train_texts += m.both_still.train
    train_texts += [t for _, fams in all_families() for f in fams if f.split == "train" for t in f.templates]
    test = {p for table in (m.relative.test, m.clause.test) for ps in table.values() for p in ps}
    test |= set(m.both_still.test)
    return tuple(sorted(p for p in test if not any(p in t for t in train_texts)))


TEST_WORDS = {w for words in phrasings().vocabulary.values() for w in words.test}
TEST_WORDS_RE = _words_pattern(TEST_WORDS)


def _train_words_leak(text: str) -> str | None:
    found = TEST_WORDS_RE.search(text)
    if found:
        return found.group(0)
    return next((p for p in held_out_phrases() if p in text), None)


def test_held_out_wording_exists() -> None:
    m = phrasings().motion_phrases
    test = {p for table in (m.relative.test, m.clause.test) for ps in table.values() for p in ps}
    assert TEST_WORDS
    assert len(held_out_phrases()) >= 0.9 * len(test | set(m.both_still.test))  # the splits differ in wording


def sample_records(n: int, seed: int = 0) -> list[ShapesRecord]:
    cfg = WorldConfig(size=32, min_frames=4, max_frames=6, two_object_prob=0.5)
    return [sample_video(seed, "train", i, cfg)[0] for i in range(n)]


def sample_object_lists(n: int, seed: int = 0) -> list[list[ShapeObject]]:
    rng = np.random.default_rng(seed)
    cfg = WorldConfig(size=32, two_object_prob=0.5)
    return [sample_objects(rng, cfg, 8) for _ in range(n)]


def _test_families(families) -> set[str]:
    return {f.family for f in families if f.split == "test"}


def _question_families(attribute: str, objects: int, split: str) -> set[str]:
    groups = phrasings().questions[attribute]
    group = groups["any"] if "any" in groups else groups["one" if objects == 1 else "two"]
    return {f.family for f in group if f.split == split}


def test_train_questions_never_use_test_wording() -> None:
    rng = np.random.default_rng(1)
    for i in range(DRAWS):
        attribute = list(phrasings().questions)[i % len(phrasings().questions)]
        objects = 1 + i % 2
        family, text = question(attribute, rng, "train", objects, colour="blue", shape="square")
        assert family in _question_families(attribute, objects, "train")
        assert _train_words_leak(text) is None, (attribute, text)


def test_test_questions_come_from_test_families_only() -> None:
    rng = np.random.default_rng(2)
    seen: set[str] = set()
    leaks = 0
    for i in range(DRAWS):
        attribute = list(phrasings().questions)[i % len(phrasings().questions)]
        objects = 1 + i % 2
        family, text = question(attribute, rng, "test", objects, colour="blue", shape="square")
        assert family in _question_families(attribute, objects, "test"), (attribute, family)
        assert not LEFTOVER.search(text)
        seen.add(family)
        leaks += _train_words_leak(text) is not None
    assert len(seen) > 3
    assert leaks > DRAWS // 10  # the detector the train tests rely on does see held-out words


def test_train_requests_never_use_test_wording() -> None:
    rng = np.random.default_rng(3)
    requests = phrasings().requests
    train_families = {f.family for fams in requests.values() for f in fams if f.split == "train"}
    for objects in sample_object_lists(DRAWS):
        family, text = video_request(objects, rng, "train")
        assert family in train_families
        assert _train_words_leak(text) is None, text


def test_test_requests_come_from_test_families_and_test_motions() -> None:
    rng = np.random.default_rng(4)
    requests = phrasings().requests
    test_families = _test_families(requests["object"]) | _test_families(requests["clause"])
    m = phrasings().motion_phrases
    test_motion = {p for table in (m.relative.test, m.clause.test) for ps in table.values() for p in ps}
    test_motion |= set(m.both_still.test)
    leaks = 0
    for objects in sample_object_lists(DRAWS, seed=1):
        family, text = video_request(objects, rng, "test")
        assert family in test_families, family
        assert any(p in text for p in test_motion), text  # the motion is worded the held-out way
        leaks += _train_words_leak(text) is not None
    assert leaks > DRAWS // 2


def test_video_request_names_every_object() -> None:
    rng = np.random.default_rng(5)
    lists = sample_object_lists(200, seed=2)
    assert any(len(o) == 2 for o in lists) and any(len(o) == 1 for o in lists)
    for split in ("train", "test"):
        for objects in lists:
            _, text = video_request(objects, rng, split)  # type: ignore[arg-type]
            for o in objects:
                assert f"{o.colour} {o.shape}" in text, (text, o)


@pytest.mark.parametrize("split", ["train", "test"])
def test_attribute_answers_are_scored_correct(split: str) -> None:
    rng = np.random.default_rng(6)
    records = sample_records(40)
    assert any(len(r.objects) == 2 for r in records)
    for record in records:
        for attribute in ATTRIBUTES:
            q = attribute_question(record, attribute, rng, split)  # type: ignore[arg-type]
            assert answer_is_correct(q.answer, q), (q.question, q.answer, q.expected)
            assert q.family in _question_families(attribute, len(record.objects), split)
            if attribute != "count":
                assert q.expected in {getattr(o, attribute) for o in record.objects}
            # A reply naming a wrong value is not accepted.
            assert not answer_is_correct(q.answer + " or maybe " + _other(attribute, q.expected), q)


def _other(attribute: str, value: str) -> str:
    from model.data.questions import VOCABULARY

    return next(v for v in VOCABULARY[attribute] if v != value)  # type: ignore[index]


def test_shapes_world_prompts_are_seeded_and_in_their_split_wording() -> None:
    held_out = shapes_world_prompts("test", requests=40, questions_each=10)
    assert held_out == shapes_world_prompts("test", requests=40, questions_each=10)
    assert held_out != shapes_world_prompts("test", requests=40, questions_each=10, seed=1)
    assert len(held_out) == 40 + 3 * 10
    train_templates = {t for _, families in all_families() for f in families if f.split == "train"
                       for t in f.templates}
    # every held-out request comes from a held-out family: none starts like a train-only template
    train_openings = {t.split("{")[0] for t in train_templates if not t.startswith("{")}
    test_openings = {t.split("{")[0] for _, families in all_families() for f in families if f.split == "test"
                     for t in f.templates}
    only_train = {o for o in train_openings - test_openings if len(o) > 12}
    assert not [text for text in held_out[:40] if any(text.startswith(o) for o in only_train)]


# The cue words of the held-out families and motion phrases, as word starts: a blind-written
# template using one was dropped (phrasings.json `_doc`).
HELD_OUT_CUES = re.compile(
    r"\b(direction|head(ing|ed|s)\b|travel|slid|drift|ris(e|es|ing)\b|fall|describ|identif|kind of|sort of|"
    r"paint|drawn|render|produc|watch|scene|summar|sum up|appear|shown)"
)
FILLER = frozenset({
    "a", "an", "the", "of", "in", "on", "to", "is", "it", "its", "this", "that", "what", "which", "how", "does",
    "do", "you", "me", "be", "are", "and", "or",
})


def _content_words(template: str) -> set[str]:
    return set(re.findall(r"[a-z]+", re.sub(r"\{[a-z_]+\}", " ", template.lower()))) - FILLER


def test_blind_families_keep_out_of_held_out_wording() -> None:
    """The rule the `blind-*` families were filtered by (phrasings.json `_doc`): no held-out
    word or cue, and no template within near-duplicate distance of a held-out one."""
    p = phrasings()
    held_words = {w.lower() for words in p.vocabulary.values() for w in words.test}
    held_templates = [t for _, families in all_families() for f in families if f.split == "test" for t in f.templates]
    blind = [t for _, families in all_families() for f in families if f.family.startswith("blind-")
             for t in f.templates]
    assert len(blind) >= 50
    for template in blind:
        assert not set(re.findall(r"[a-z]+", template.lower())) & held_words, template
        assert not HELD_OUT_CUES.search(template.lower()), template
        for other in held_templates:
            assert difflib.SequenceMatcher(None, template.lower(), other.lower()).ratio() < 0.75, (template, other)
            shared = _content_words(template) & _content_words(other)
            assert len(shared) / len(_content_words(template) | _content_words(other)) < 0.5, (template, other)


def test_held_out_cues_catch_the_held_out_families() -> None:
    """The cue list is not empty words: every held-out question and request family uses one (or a
    held-out noun). Count questions aside: one held-out count family has no cue word, and no
    blind family asks for a count."""
    held_words = {w.lower() for words in phrasings().vocabulary.values() for w in words.test}
    for where, families in all_families():
        for family in families:
            if family.split != "test" or where.startswith("questions.count"):
                continue
            hits = [t for t in family.templates
                    if HELD_OUT_CUES.search(t.lower()) or set(re.findall(r"[a-z]+", t.lower())) & held_words]
            assert hits, (where, family.family)
