"""A store of the frozen base LLM's greedy answers, so `gpt4video data chat` asks each prompt once.

Self-distillation answers (`model.data.chat`) depend only on the base model's weights,
the system prompt, the token cap and greedy decoding, not on the LoRA or the abstractor
(the adapter is off while the base answers). They cost most of a training run's data
time on a CPU (about 30 min for 1,200 prompts on 2 cores), so they are kept in a JSONL
file named by a hash of exactly those inputs: a different base (its GGUF sha256), system
prompt or cap is a different file, never a stale answer.

Rows are `{"prompt", "text", "finish_reason"}`: the raw answer, before `data chat` trims
or drops it, so a change to that filtering needs no new answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BASE_ANSWERS_DIR = Path(__file__).resolve().parent / "base_answers"


@dataclass(frozen=True)
class BaseAnswer:
    text: str
    finish_reason: str  # "stop" | "length"


def answers_key(base: str, base_sha256: str, system_prompt: str, max_new_tokens: int) -> str:
    """The file name (without suffix) for answers given under exactly these inputs."""
    inputs = {"base": base, "base_sha256": base_sha256, "system": system_prompt,
              "max_new_tokens": max_new_tokens, "decoding": "greedy"}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


class BaseAnswerStore:
    """Answers by prompt text, read from and appended to one JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writable = True
        self._answers: dict[str, BaseAnswer] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self._answers[row["prompt"]] = BaseAnswer(row["text"], row["finish_reason"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{number}: not a base-answer row ({exc}); delete the file "
                                     "to have the answers generated again") from exc

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, prompt: str) -> BaseAnswer | None:
        return self._answers.get(prompt)

    def add(self, answers: dict[str, BaseAnswer]) -> None:
        """Keep `answers` and append them to the file (written in one go, at the end of a batch)."""
        new = {p: a for p, a in answers.items() if p not in self._answers}
        if not new:
            return
        self._answers.update(new)
        if not self.writable:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write("".join(json.dumps({"prompt": p, "text": a.text, "finish_reason": a.finish_reason},
                                           ensure_ascii=False) + "\n" for p, a in new.items()))
        except OSError as exc:  # e.g. an installed, read-only package: the run goes on, unstored
            self.writable = False
            log.warning("cannot store the base's answers in %s (%s): they are kept for this run only; "
                        "pass `data chat --answers-dir` a writable directory to keep them", self.path, exc)
