"""Similarity grouping for multi-video dialogues, with the real MiniLM encoder."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.grouping import GroupingConfig, group_captions, group_embeddings
from model.text_encoder import MiniLMEncoder


@pytest.fixture(scope="module")
def encoder():
    from model.text_encoder import MiniLMEncoder

    return MiniLMEncoder()


def test_near_identical_captions_are_grouped_together(encoder: MiniLMEncoder) -> None:
    captions = [
        "a red circle moves to the left",
        "a man is cooking pasta in a kitchen",
        "stock market numbers on a screen",
        "a man cooking pasta in the kitchen",
        "a red circle moving to the left",
        "waves crash on a rocky beach at sunset",
    ]
    groups = group_captions(captions, encoder, GroupingConfig(top_k=1, threshold=0.8))
    assert sorted(sorted(g) for g in groups) == [[0, 4], [1, 3]]


def test_threshold_and_top_k_are_respected() -> None:
    # Unit vectors at known angles: cos(0-1)=0.95, cos(0-2)=0.9, cos(0-3)=0.1.
    angles = np.array([0.0, np.arccos(0.95), -np.arccos(0.9), np.arccos(0.1)])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    assert group_embeddings(emb, GroupingConfig(top_k=2, threshold=0.85)) == [[0, 1, 2]]
    assert group_embeddings(emb, GroupingConfig(top_k=1, threshold=0.85)) == [[0, 1]]
    assert group_embeddings(emb, GroupingConfig(top_k=3, threshold=0.99)) == []


def test_blocked_computation_matches_one_block() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    one = group_embeddings(emb, GroupingConfig(top_k=2, threshold=0.3, block=1000))
    blocked = group_embeddings(emb, GroupingConfig(top_k=2, threshold=0.3, block=7))
    assert one == blocked and one
    members = [i for g in one for i in g]
    assert len(members) == len(set(members))
