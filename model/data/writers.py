"""Dialogue writers: turn captions (and attributes, when known) into conversation messages.

Two implementations of one small protocol:
- `TemplateWriter`: offline, deterministic per random generator; knows the shapes world's
  attributes and asks about shape, colour, motion and count; falls back to
  describe / generate dialogues for captions without attributes (WebVid-style data).
- `OpenAIChatWriter`: asks any OpenAI-compatible chat endpoint (configured by URL,
  model name and key) to write the dialogue for real data; its replies are parsed and
  checked before use. Never called by the tests.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx
import numpy as np

from model.data.phrasings import draw_template, fill, follow_up_prefix, motion_phrase, phrasings, video_request
from model.data.questions import ATTRIBUTES, attribute_question, describe_question
from model.data.schema import Message
from model.data.shapes import (
    MOTION_PHRASE,
    MOTIONS,
    ShapeObject,
    ShapesRecord,
    WorldConfig,
    caption_for,
    first_mover,
    object_names,
    sample_objects,
    video_caption,
)
from model.tags import parse_reply

log = logging.getLogger(__name__)

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


class WriterError(RuntimeError):
    """A dialogue writer produced no usable conversation; the message says why."""


@dataclass(frozen=True)
class CaptionItem:
    """One captioned video; `record` carries the shapes attributes when known."""

    video: str  # path relative to the output file, or a video id
    caption: str
    record: ShapesRecord | None = None


class DialogueWriter(Protocol):
    def single_video(self, item: CaptionItem, rng: np.random.Generator) -> list[Message]:
        """A (multi-round) dialogue about one video, shown in the first user message."""
        ...

    def generation(self, caption: str, rng: np.random.Generator,
                   objects: Sequence[ShapeObject] | None = None) -> list[Message]:
        """The user asks for a video; the assistant answers with `<video>caption</video>`."""
        ...

    def multi_video(self, items: Sequence[CaptionItem], rng: np.random.Generator) -> list[Message]:
        """A dialogue about several videos shown together in the first user message."""
        ...


# -- generation requests (shared with evaluation) --------------------------------------------
def describe_objects(objects: Sequence[ShapeObject]) -> str:
    """'a red circle that moves to the left' / 'a blue square and a red circle where the square moves up'."""
    if len(objects) == 1:
        o = objects[0]
        return f"a {o.colour} {o.shape} that {MOTION_PHRASE[o.motion]}"
    mover = first_mover(objects)
    if mover is None:
        return f"{object_names(objects)} that both stay still"
    return f"{object_names(objects)} where the {mover.shape} {MOTION_PHRASE[mover.motion]}"


GENERATION_REPLY = "Here is the video: <video>{caption}</video>"


def tagged(caption: str) -> str:
    return GENERATION_REPLY.format(caption=caption)


# -- template writer --------------------------------------------------------------------
@dataclass
class TemplateWriter:
    min_rounds: int = 2
    max_rounds: int = 4
    follow_up_generation_prob: float = 0.3  # end a video dialogue by asking for a variation
    # Ask for an unrelated new video after the first round, then come back to the upload.
    interleaved_generation_prob: float = 0.3

    def single_video(self, item: CaptionItem, rng: np.random.Generator) -> list[Message]:
        rounds = int(rng.integers(self.min_rounds, self.max_rounds + 1))
        pairs: list[tuple[str, str]] = []
        if item.record is None:
            pairs.append((describe_question(rng)[1], item.caption))
        else:
            kinds = [*ATTRIBUTES, "describe"]
            for kind in rng.permutation(kinds)[:rounds]:
                pairs.append(self._question(item, str(kind), rng))
        messages: list[Message] = []
        for i, (question, answer) in enumerate(pairs):
            messages.append(Message(role="user", content=question, videos=[0] if i == 0 else []))
            messages.append(Message(role="assistant", content=answer))
        if item.record is not None and rng.random() < self.interleaved_generation_prob:
            messages = self._interleave_request(item, messages, rng)
        if item.record is not None and rng.random() < self.follow_up_generation_prob:
            messages.extend(self._variation(item.record, rng))
        return messages

    def _question(self, item: CaptionItem, kind: str, rng: np.random.Generator) -> tuple[str, str]:
        if kind == "describe" or item.record is None:
            return describe_question(rng)[1], item.caption
        q = attribute_question(item.record, kind, rng)  # type: ignore[arg-type]
        return q.question, q.answer

    def _interleave_request(self, item: CaptionItem, messages: list[Message],
                            rng: np.random.Generator) -> list[Message]:
        """After the first round: a request for a new video of other objects (tagged reply),
        then a question about the uploaded video again, often introduced as such
        ("About my video: ..."), so the model keeps the two apart."""
        world = WorldConfig()
        objects = sample_objects(rng, world, world.min_frames)
        request = [Message(role="user", content=video_request(objects, rng)[1]),
                   Message(role="assistant", content=tagged(caption_for(objects)))]
        rest = messages[2:]
        if not rest:  # one round only: ask one more question about the upload after the request
            question, answer = self._question(item, str(rng.choice([*ATTRIBUTES, "describe"])), rng)
            rest = [Message(role="user", content=question), Message(role="assistant", content=answer)]
        prefix = follow_up_prefix(rng, "train")
        rest[0] = rest[0].model_copy(update={"content": prefix + rest[0].content})
        return [*messages[:2], *request, *rest]

    def _variation(self, record: ShapesRecord, rng: np.random.Generator) -> list[Message]:
        """'Now show me one where the circle moves up.' -> a tagged caption of the changed video."""
        objects = list(record.objects)
        index = int(rng.integers(0, len(objects)))
        target = objects[index]
        choices = [m for m in MOTIONS if m != target.motion and (len(objects) == 1 or m != "still")]
        motion = str(rng.choice(choices))
        changed = [o.model_copy(update={"motion": "still"}) for o in objects]
        changed[index] = target.model_copy(update={"motion": motion})
        subject = "it" if len(objects) == 1 else f"the {target.shape}"
        request = f"Now show me a video where {subject} {motion_phrase(motion, rng, 'train', 'clause')}."
        return [Message(role="user", content=request),
                Message(role="assistant", content=tagged(video_caption(changed)))]

    def generation(self, caption: str, rng: np.random.Generator,
                   objects: Sequence[ShapeObject] | None = None) -> list[Message]:
        if objects:
            request = video_request(objects, rng)[1]
        else:
            _, template = draw_template(phrasings().requests["object"], rng, "train")
            request = fill(template, rng, "train", what=caption)
        return [Message(role="user", content=request), Message(role="assistant", content=tagged(caption))]

    def multi_video(self, items: Sequence[CaptionItem], rng: np.random.Generator) -> list[Message]:
        n = len(items)
        if not 2 <= n <= len(ORDINALS):
            raise WriterError(f"a multi-video dialogue takes 2 to {len(ORDINALS)} videos, got {n}")
        answer = " ".join(f"In the {ORDINALS[i]} video, {it.caption}." for i, it in enumerate(items))
        messages = [Message(role="user", content="Describe each video.", videos=list(range(n))),
                    Message(role="assistant", content=answer)]
        pick = int(rng.integers(0, n))
        # Only ask "which one" when the answer is unique.
        if sum(it.caption == items[pick].caption for it in items) == 1:
            messages += [Message(role="user", content=f"Which video shows {items[pick].caption}?"),
                         Message(role="assistant", content=f"The {ORDINALS[pick]} video.")]
        return messages


# -- OpenAI-compatible chat endpoint ----------------------------------------------------------
_SYSTEM = (
    "You write training dialogues for a video assistant. Reply with JSON only: "
    '{"messages": [{"role": "user" | "assistant", "content": "..."}]}. Start with a user '
    "message, alternate roles, end with an assistant message. The assistant never invents "
    "details beyond the captions it is given."
)


@dataclass
class OpenAIChatWriter:
    """Writes dialogues with an OpenAI-compatible `/chat/completions` endpoint."""

    base_url: str  # e.g. "http://127.0.0.1:8001/v1"
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    temperature: float = 0.7

    def _complete(self, prompt: str, seed: int) -> str:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model, "temperature": self.temperature, "seed": seed,
            "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}],
        }
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout_s)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise WriterError(f"chat endpoint {url} failed: {exc}; check the URL, model and key") from exc

    def single_video(self, item: CaptionItem, rng: np.random.Generator) -> list[Message]:
        prompt = (f"The user shows one video whose caption is: {item.caption!r}. Write 2 to 4 rounds "
                  "of questions about it and accurate answers.")
        return parse_dialogue(self._complete(prompt, int(rng.integers(2**31))), num_videos=1)

    def generation(self, caption: str, rng: np.random.Generator,
                   objects: Sequence[ShapeObject] | None = None) -> list[Message]:
        prompt = (f"The user asks for a video showing: {caption!r}. The assistant answers briefly and "
                  f"includes exactly <video>{caption}</video> in its reply.")
        messages = parse_dialogue(self._complete(prompt, int(rng.integers(2**31))), num_videos=0)
        if not parse_reply(messages[-1].content).captions:
            raise WriterError("the endpoint's reply carries no <video> tag; retry or use the template writer")
        return messages

    def multi_video(self, items: Sequence[CaptionItem], rng: np.random.Generator) -> list[Message]:
        listing = "; ".join(f"video {i + 1}: {it.caption!r}" for i, it in enumerate(items))
        prompt = (f"The user shows {len(items)} videos together ({listing}). Write 1 to 3 rounds "
                  "comparing them, with accurate answers.")
        return parse_dialogue(self._complete(prompt, int(rng.integers(2**31))), num_videos=len(items))


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def parse_dialogue(text: str, num_videos: int) -> list[Message]:
    """An endpoint's JSON reply -> checked messages; the first user message shows the videos."""
    try:
        data = json.loads(_FENCE.sub("", text.strip()))
        raw = data["messages"] if isinstance(data, dict) else data
        messages = [Message(role=m["role"], content=str(m["content"]).strip()) for m in raw]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise WriterError(f"the endpoint's reply is not the requested JSON dialogue: {exc}") from exc
    if len(messages) < 2 or messages[0].role != "user" or messages[-1].role != "assistant":
        raise WriterError("a dialogue must start with the user and end with the assistant")
    for a, b in itertools.pairwise(messages):
        if a.role == b.role or a.role == "system" or b.role == "system":
            raise WriterError("dialogue roles must alternate user/assistant")
    if any(not m.content for m in messages):
        raise WriterError("a dialogue message is empty")
    messages[0] = messages[0].model_copy(update={"videos": list(range(num_videos))})
    return messages
