"""The labelled moderation prompt set: size, labels, and a split that really holds out."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from dataclasses import asdict

import pytest

from model.data.everyday import EVERYDAY_PATH
from model.safety.categories import CATEGORY_IDS, SAFE
from model.safety.data import PROMPTS_PATH, everyday_prompts, load_prompts
from model.safety.data.build_prompts import BLIND_SEEDS_PATH, build_records

TRAIN_ONLY_GROUP_PREFIXES = ("x", "blind-")  # extra seeds (issue 5), blind-written seeds (issue 13)


def test_shipped_file_is_what_the_builder_writes() -> None:
    shipped = [json.loads(line) for line in PROMPTS_PATH.read_text().splitlines()]
    assert shipped == [asdict(r) for r in build_records()]


def test_size_and_coverage() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 700
    kinds = Counter((p.kind, p.label if p.kind == "harmful" else p.near) for p in prompts)
    for category in CATEGORY_IDS:
        assert kinds[("harmful", category)] >= 40
        assert kinds[("benign_lookalike", category)] >= 40
    assert kinds[("benign", None)] >= 100
    assert {p.style for p in prompts} == {"caption", "request"}
    assert "how do I kill a stuck process in linux" in {p.text for p in prompts}


def test_split_is_by_group_and_stratified() -> None:
    prompts = load_prompts()
    train, test = load_prompts(split="train"), load_prompts(split="test")
    assert len(train) + len(test) == len(prompts)
    assert {p.group for p in train}.isdisjoint({p.group for p in test})
    assert {p.text for p in train}.isdisjoint({p.text for p in test})
    stratified = [p for p in prompts if not p.group.startswith(TRAIN_ONLY_GROUP_PREFIXES)]
    assert 0.18 <= len(test) / len(stratified) <= 0.27
    for category in CATEGORY_IDS:
        assert any(p.label == category for p in test)
        assert any(p.near == category for p in test)
    assert any(p.kind == "benign" and p.label == SAFE for p in test)


@pytest.mark.parametrize("prefix", TRAIN_ONLY_GROUP_PREFIXES)
def test_extra_seeds_are_train_only_and_leave_the_split_alone(prefix: str) -> None:
    records = build_records()
    extra = [r for r in records if r.group.startswith(prefix)]
    assert extra and all(r.split == "train" for r in extra)
    assert {r.text for r in extra}.isdisjoint({r.text for r in records if not r.group.startswith(prefix)})
    # the stratified split is computed over the original seeds only: same test groups as before
    test_groups = {r.group for r in records if r.split == "test"}
    assert not any(g.startswith(prefix) for g in test_groups)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_blind_seeds_stay_out_of_near_duplicate_distance_of_held_out_prompts() -> None:
    """The rule blind_train_seeds.json was filtered by: difflib ratio < 0.6 and word Jaccard < 0.4."""
    data = json.loads(BLIND_SEEDS_PATH.read_text())
    seeds = [s for kind in ("harmful", "lookalikes") for styles in data[kind].values()
             for texts in styles.values() for s in texts]
    held_out = [p.text for p in load_prompts(split="test")] + [p.text for p in everyday_prompts("test")]
    for seed in seeds:
        for other in held_out:
            a, b = _words(seed), _words(other)
            assert len(a & b) / len(a | b) < 0.4, (seed, other)
            matcher = difflib.SequenceMatcher(None, seed.lower(), other.lower())
            assert matcher.quick_ratio() < 0.6 or matcher.ratio() < 0.6, (seed, other)


def test_everyday_prompts_join_the_moderator_data_as_safe_with_their_split() -> None:
    rows = [json.loads(line) for line in EVERYDAY_PATH.read_text().splitlines() if line.strip()]
    for split in ("train", "test"):
        prompts = everyday_prompts(split)
        assert [p.text for p in prompts] == [r["text"] for r in rows if r["split"] == split]
        assert all(p.label == SAFE and p.kind == "benign" and p.split == split for p in prompts)
    # One group each, and none shared with the moderation set's own groups.
    groups = [p.group for s in ("train", "test") for p in everyday_prompts(s)]
    assert len(set(groups)) == len(groups)
    assert not set(groups) & {p.group for p in load_prompts()}
