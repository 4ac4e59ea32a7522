"""The multi-turn check: ask about an uploaded video, ask for a new video, then ask about the first one again.

Each held-out video gets one three-turn conversation, the model's own replies kept in
the history (as the service keeps them):
1. the video + an attribute question (held-out wording);
2. a request for a video of other objects (held-out wording): the reply must carry a
   tag whose caption is exactly those objects;
3. another attribute question after a held-out prefix that points back at the upload
   ("Back to the video I uploaded: ..."), with no video shown again: the answer must
   still be about the first video.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.data.phrasings import follow_up_prefix, video_request
from model.data.questions import ATTRIBUTES, answer_is_correct, attribute_question, parse_caption
from model.data.shapes import ShapesRecord, WorldConfig, caption_for, sample_objects
from model.engine.base import Engine, GenerationRequest, SamplingParams, Turn
from model.tags import parse_reply


def multi_turn_metrics(engine: Engine, records: Sequence[ShapesRecord], root: Path, seed: int = 0,
                       batch: int = 32, max_new: int = 48) -> dict:
    rng = np.random.default_rng(seed)
    world = WorldConfig()
    sampling = SamplingParams(max_new_tokens=max_new, temperature=0.0, seed=0)
    plans = []
    for record in records:
        first, second = rng.choice([a for a in ATTRIBUTES if a != "count"], size=2, replace=False)
        objects = sample_objects(rng, world, world.min_frames)
        plans.append({
            "record": record, "path": str((root / record.video).resolve()),
            "q1": attribute_question(record, str(first), rng, "test"),  # type: ignore[arg-type]
            "request": video_request(objects, rng, "test")[1], "wanted": parse_caption(caption_for(objects)),
            "q3": attribute_question(record, str(second), rng, "test"),  # type: ignore[arg-type]
            "follow_up": follow_up_prefix(rng, "test"),
        })

    def run(histories: list[tuple[Turn, ...]], paths: list[dict[str, str]]) -> list[str]:
        replies: list[str] = []
        for start in range(0, len(histories), batch):
            requests = [GenerationRequest(f"mt-{start + i}", h, sampling, p)
                        for i, (h, p) in enumerate(zip(histories[start:start + batch], paths[start:start + batch],
                                                       strict=True))]
            replies.extend(r.raw_text for r in engine.generate(requests))
        return replies

    paths = [{p["record"].id: p["path"]} for p in plans]
    histories = [(Turn("user", p["q1"].question, (p["record"].id,)),) for p in plans]
    r1 = run(histories, paths)
    histories = [(*h, Turn("assistant", r), Turn("user", p["request"])) for h, r, p in zip(histories, r1, plans,
                                                                                          strict=True)]
    r2 = run(histories, paths)
    histories = [(*h, Turn("assistant", r), Turn("user", p["follow_up"] + p["q3"].question))
                 for h, r, p in zip(histories, r2, plans, strict=True)]
    r3 = run(histories, paths)
    ok1 = [answer_is_correct(r, p["q1"]) for r, p in zip(r1, plans, strict=True)]
    ok2 = [any(parse_caption(c) == p["wanted"] for c in parse_reply(r).captions) for r, p in zip(r2, plans,
                                                                                               strict=True)]
    ok3 = [answer_is_correct(r, p["q3"]) for r, p in zip(r3, plans, strict=True)]
    n = max(1, len(plans))
    example = {"turns": [plans[0]["q1"].question, r1[0], plans[0]["request"], r2[0],
                         plans[0]["follow_up"] + plans[0]["q3"].question, r3[0]]} if plans else {}
    return {"conversations": len(plans), "first_question": sum(ok1) / n, "video_request": sum(ok2) / n,
            "follow_up": sum(ok3) / n, "all_three": sum(a and b and c for a, b, c in zip(ok1, ok2, ok3,
                                                                                       strict=True)) / n,
            "example": example}
