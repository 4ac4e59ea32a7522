"""Caption moderation while a reply streams: every delta the worker sends is text the
moderator has judged, and the deltas (plus what the final reply adds) are the final text."""

from __future__ import annotations

import time
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from gpt4video import llm_protocol as wire
from model.engine.base import GenerationResult
from model.safety.policy import withheld_notice
from model.tags import parse_reply
from tests.workers.test_llm_worker import KeywordModerator
from workers.reply_moderation import StreamModerator, moderate_reply, settled_length

REPLIES = [
    "Sure. <video>a man stabs another man, blood everywhere</video> Anything else?",
    "Here it is: <video>a red circle moves to the left</video> Enjoy!",
    "two: <video0>a cat</video0> and <video1>blood on a dog</video1>, then <video2>a bird</video2>.",
    "nested <video>a <video>blood</video> b</video> and a stray </video> close",
    "maths: a < b and c <vi not a tag, <b>bold</b>",
    "cut short: <video>a red square that blee",
    "  folded   whitespace \n\n <video>  a   boat </video>  ",
    " ".join(f"<video>clip {i}</video>" for i in range(10)),  # past MAX_CAPTIONS
    "Try this:\r\n```\nfor i in range(3):\n    print(i)  \n```\n\n\n<video>a cat</video>\n  done",  # layout kept
]


def _final(raw: str, moderator=None, known=None) -> wire.LLMReply:
    parsed = parse_reply(raw)
    result = GenerationResult("r", parsed.text, raw, parsed.captions, 1, 1, "stop")
    request = wire.LLMRequest(id="r", turns=[wire.WireTurn(role="user", content="x")], video_paths={},
                              sampling=wire.WireSampling(max_new_tokens=4, temperature=0.0, top_p=1.0),
                              deadline=time.time() + 60)
    return moderate_reply(request, result, moderator or KeywordModerator(), "w", known=known)


def _stream(raw: str, cuts: list[int]) -> list[str]:
    stream = StreamModerator(KeywordModerator())
    bounds = [0, *sorted({min(c, len(raw)) for c in cuts}), len(raw)]
    return [stream.feed(raw[a:b]) for a, b in pairwise(bounds)]


@given(st.sampled_from(REPLIES), st.lists(st.integers(0, 200), max_size=40))
def test_the_deltas_are_always_a_prefix_of_the_moderated_reply(raw: str, cuts: list[int]) -> None:
    final = _final(raw).text
    shown = ""
    for delta in _stream(raw, cuts):
        shown += delta
        assert final.startswith(shown), (shown, final)
        assert "blood" not in shown  # a flagged caption never goes out


def test_text_streams_as_it_comes_and_a_caption_once_judged() -> None:
    raw = REPLIES[0]
    deltas = _stream(raw, list(range(1, len(raw))))  # one character at a time
    shown = "".join(deltas)
    assert shown == _final(raw).text == f"Sure. {withheld_notice('violence_gore')} Anything else?"
    notice_at = next(i for i, d in enumerate(deltas) if "withheld" in d)
    assert "".join(deltas[:notice_at]) == "Sure."  # sent before the caption was complete
    assert raw.index("</video>") + len("</video>") - 1 == notice_at  # sent as its tag closed


def test_a_caption_cut_by_the_token_limit_is_left_to_the_final_reply() -> None:
    raw = REPLIES[5]
    assert "".join(_stream(raw, [5, 20, 30])) == "cut short:"
    assert _final(raw).text == "cut short: [video:0]"


def test_settled_length_holds_open_captions_and_tag_starts() -> None:
    assert settled_length("hi <video>a ca") == 3
    assert settled_length("hi <vid") == 3
    assert settled_length("hi </video") == 3
    assert settled_length("hi <video>a</video> b") == len("hi <video>a</video> b")
    assert settled_length("a < b") == 5  # not a tag start
    assert settled_length("x <video>a <video>b</video> c") == 2  # nested: held to the outer close


def test_the_final_reply_reuses_the_streamed_verdicts() -> None:
    class Counting(KeywordModerator):
        calls = 0

        def check_many(self, texts, source="text"):
            Counting.calls += len(texts)
            return super().check_many(texts, source)

    raw = REPLIES[2]
    stream = StreamModerator(Counting())
    for ch in raw:
        stream.feed(ch)
    reply = _final(raw, Counting(), known=stream.verdicts)
    assert Counting.calls == 3  # each caption judged once, while streaming
    assert reply.captions == ["a cat", "a bird"]
    assert stream.sent == reply.text
