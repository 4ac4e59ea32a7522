"""The project's everyday chat prompts (`everyday_prompts.jsonl`): one reader for every user.

Rows are `{"text", "topic", "split"}`. Stage 2's chat data (`model.data.chat`), the chat
evaluation and the moderator's optional benign set (`model.safety.data`) all read them here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

EVERYDAY_PATH = Path(__file__).with_name("everyday_prompts.jsonl")


class EverydayPrompt(BaseModel):
    text: str
    topic: str
    split: Literal["train", "test"]


def everyday_rows(split: str, path: Path = EVERYDAY_PATH) -> list[EverydayPrompt]:
    """The prompts of `split`, in file order."""
    rows = [EverydayPrompt.model_validate(json.loads(line))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r.split == split]
