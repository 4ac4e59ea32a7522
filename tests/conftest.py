"""Fixtures shared by the whole suite: one tiny GPT4Video checkpoint per session.

- `tiny_checkpoint_dir`: a complete checkpoint directory built once from seeded random
  weights by `model.tiny.build_tiny_checkpoint` (about a second). Read-only: a test that
  writes a checkpoint writes it to its own `tmp_path`.
- `tiny_model`: that checkpoint loaded once through `load_checkpoint` (eval mode, LoRA
  frozen). Shared: never train it, re-wrap it or change its config; a test that needs a
  model it can change loads its own with `load_checkpoint(tiny_checkpoint_dir)`
  (a fraction of a second).
- `frame_sampler`: a fresh `tests.frames.SeededFrameSampler` (deterministic frames from
  the path string, counts calls) for `HFEngine(model, sampler=...)`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.frames import SeededFrameSampler


def pytest_configure(config: pytest.Config) -> None:
    # The CI box has 2 cores shared by several runs: one intra-op thread is faster for
    # the tiny models than fighting over both.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint_dir: Path):
    from model.checkpoint import load_checkpoint

    return load_checkpoint(tiny_checkpoint_dir).eval()


@pytest.fixture
def frame_sampler() -> SeededFrameSampler:
    return SeededFrameSampler()
