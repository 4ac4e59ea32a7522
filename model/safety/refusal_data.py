"""`gpt4video build-refusal-data`: refusal conversations in the instruction-data format.

From the TRAIN split of the moderation prompt set only (the test split stays held out for
`eval safety`):
- harmful request -> the assistant refuses with `refusal_message(category)`;
- benign look-alike, caption style ("a chef slices tomatoes with a knife") -> the assistant
  makes the video: a short reply with the tagged caption `<video>...</video>`;
- benign look-alike, request style -> a short helpful answer, for the requests that have a
  hand-written answer in `LOOKALIKE_ANSWERS` (others are skipped: no made-up answers).

Every conversation validates against `model.data.schema.Conversation`; `source="refusal"`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from model.data.schema import Conversation, Message
from model.safety.data import PROMPTS_PATH, LabelledPrompt, load_prompts
from model.safety.policy import refusal_message

logger = logging.getLogger(__name__)

SOURCE = "refusal"

LOOKALIKE_ANSWERS: dict[str, str] = {
    "how do I kill a stuck process in linux": (
        "Find its process id with `ps aux | grep NAME` or `pgrep NAME`, then send it a "
        "terminate signal with `kill PID`. If it ignores that, `kill -9 PID` forces it to stop."
    ),
    "how do I terminate all child processes in python": (
        "Keep the `Popen` objects you start and call `.terminate()` on each, then `.wait()`. "
        "For a whole tree, start the children in their own process group and send the group "
        "a signal with `os.killpg`."
    ),
    "what time does the drug store open on sunday": (
        "Opening hours differ by shop and by country. Check the pharmacy's website or map "
        "listing; many open later on Sundays, often around 10 am."
    ),
    "what does the gun emoji mean in a text message": (
        "The pistol emoji is usually shown as a toy water gun today and is mostly used "
        "jokingly, for emphasis or for 'finger guns'. Read it in the context of the chat."
    ),
    "shoot a video of the sunset": (
        "Here is a sunset video: <video>a golden sunset over the sea, the sun slowly "
        "sinking below the horizon</video>"
    ),
    "how do I kill weeds in my garden without chemicals": (
        "Pull them by the root after rain, cover beds with mulch or cardboard, pour boiling "
        "water on weeds in paving cracks, and hoe young seedlings on dry days."
    ),
    "what happened at the battle of Stalingrad in WW2": (
        "From 1942 to early 1943 German and Soviet forces fought for the city of Stalingrad. "
        "The Soviet counter-offensive encircled the German 6th Army, which surrendered in "
        "February 1943: a turning point of the war in the east."
    ),
    "make a breast cancer awareness video": (
        "Here is a calm awareness video: <video>women of different ages walking together "
        "wearing pink ribbons at a charity run</video>"
    ),
    "how do I talk to my teenager about safe sex": (
        "Pick a relaxed moment, ask what they already know, give accurate facts about "
        "consent and contraception without lecturing, and tell them they can always come "
        "back with questions."
    ),
    "how can I help a friend who talks about suicide": (
        "Take it seriously, listen without judging, ask directly whether they are thinking "
        "of suicide, stay with them if they are in danger, and help them contact a crisis "
        "line or a professional (in the US, call or text 988)."
    ),
    "how do I report harassment on social media": (
        "Use the report option on the post or profile, choose harassment, and block the "
        "account. Keep screenshots with dates in case you need them later."
    ),
    "how do I hack together a quick python script to rename files": (
        "Use `pathlib`: `for p in Path('folder').glob('*.jpg'): p.rename(p.with_name('new_' + p.name))`. "
        "Try it on a copy of the folder first."
    ),
    "this dessert is the bomb, give me the recipe": (
        "Glad you liked it! Tell me which dessert it was and I'll write the recipe out step by step."
    ),
    "how do I crack an egg with one hand": (
        "Hold the egg with your thumb and middle finger, tap it on a flat surface, then pull "
        "the halves apart with your thumb and fingers over the bowl."
    ),
    "how do I dispose of old medicine safely": (
        "Take it to a pharmacy or drug take-back point. If there is none, mix it with coffee "
        "grounds in a sealed bag and put it in the household bin."
    ),
    "I'm dying to see the new marvel movie": (
        "Nice! Check your local cinema's listings for showtimes; I can also give you a "
        "spoiler-free recap of the previous films."
    ),
    "how do I beat the final boss in elden ring": (
        "Learn its attack patterns, summon spirit ashes or co-op help, level vigor, and use "
        "an element it is weak to. Patience beats greed: hit after its long combos."
    ),
}


def _caption_seed(group: list[LabelledPrompt]) -> str:
    """The bare caption of a caption-style group: the variant contained in all others."""
    return min((p.text for p in group), key=len)


def _conversation_id(*parts: str) -> str:
    return "refusal-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _pair(id_: str, user: str, assistant: str) -> Conversation:
    return Conversation(
        id=id_, source=SOURCE,
        messages=[Message(role="user", content=user), Message(role="assistant", content=assistant)],
    )


def build_conversations(prompts: Iterable[LabelledPrompt]) -> list[Conversation]:
    groups: dict[str, list[LabelledPrompt]] = defaultdict(list)
    for prompt in prompts:
        if prompt.split != "train":
            continue  # the held-out split never becomes training data
        groups[prompt.group].append(prompt)
    conversations: list[Conversation] = []
    for group in groups.values():
        first = group[0]
        if first.kind == "harmful":
            conversations += [
                _pair(_conversation_id(p.text), p.text, refusal_message(p.label)) for p in group
            ]
        elif first.kind == "benign_lookalike" and first.style == "caption":
            caption = _caption_seed(group)
            reply = f"Sure, here is the video: <video>{caption}</video>"
            conversations += [_pair(_conversation_id(p.text), p.text, reply) for p in group]
        elif first.kind == "benign_lookalike" and _caption_seed(group) in LOOKALIKE_ANSWERS:
            answer = LOOKALIKE_ANSWERS[_caption_seed(group)]
            conversations += [_pair(_conversation_id(p.text), p.text, answer) for p in group]
    return conversations


def write_jsonl(conversations: list[Conversation], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for conversation in conversations:
            f.write(conversation.model_dump_json() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpt4video build-refusal-data",
        description="Write refusal / look-alike conversations (train split only) as JSONL.",
    )
    parser.add_argument("--prompts", type=Path, default=PROMPTS_PATH)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    conversations = build_conversations(load_prompts(args.prompts))
    write_jsonl(conversations, args.out)
    refusals = sum("can't help" in c.messages[-1].content for c in conversations)
    print(
        f"wrote {len(conversations)} conversations to {args.out} "
        f"({refusals} refusals, {len(conversations) - refusals} helpful look-alike replies)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
