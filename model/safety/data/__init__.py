"""The labelled moderation prompt set (`prompts.jsonl`) and its loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError, model_validator

from model.safety.categories import CATEGORY_IDS, LABELS, SAFE

PROMPTS_PATH = Path(__file__).with_name("prompts.jsonl")

Kind = Literal["harmful", "benign_lookalike", "benign"]
Split = Literal["train", "test"]


class PromptSetError(ValueError):
    """The prompt file is missing or a line is malformed; rebuild it with build_prompts."""


class LabelledPrompt(BaseModel):
    text: str
    label: str
    kind: Kind
    split: Split
    group: str  # seed id: all variants of one seed share it and its split
    style: Literal["caption", "request"]
    near: str | None = None  # look-alikes: the category they resemble

    @model_validator(mode="after")
    def _consistent(self) -> LabelledPrompt:
        if self.label not in LABELS:
            raise ValueError(f"label {self.label!r} is not one of {list(LABELS)}")
        if (self.kind == "harmful") != (self.label != SAFE):
            raise ValueError(f"kind {self.kind!r} does not fit label {self.label!r}")
        if (self.kind == "benign_lookalike") != (self.near in CATEGORY_IDS):
            raise ValueError("look-alikes (and only they) name the category they resemble in `near`")
        return self

    @property
    def harmful(self) -> bool:
        return self.label != SAFE


def load_prompts(path: Path | None = None, split: Split | None = None) -> list[LabelledPrompt]:
    path = Path(path) if path else PROMPTS_PATH
    if not path.is_file():
        raise PromptSetError(
            f"{path} not found; build it with `python -m model.safety.data.build_prompts`"
        )
    prompts: list[LabelledPrompt] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            prompts.append(LabelledPrompt.model_validate_json(line))
        except (ValidationError, json.JSONDecodeError) as exc:
            raise PromptSetError(f"{path}:{number}: {exc}") from None
    return [p for p in prompts if split is None or p.split == split]


def everyday_prompts(split: Split) -> list[LabelledPrompt]:
    """The project's everyday chat prompts of `split` ("convert 3 gallons to liters") as plain
    benign (safe) prompts the moderator must let through, one group each."""
    from model.data.everyday import everyday_rows

    return [LabelledPrompt(text=r.text, label=SAFE, kind="benign", split=split, style="request",
                           group=f"everyday-{split}-{r.topic}-{number}")
            for number, r in enumerate(everyday_rows(split))]
