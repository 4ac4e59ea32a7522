"""Caption tags in model replies: properties over arbitrary text, and the named cases."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from model.tags import _TAG, DEFAULT_MAX_CAPTION_CHARS, MAX_CAPTIONS, ParsedReply, parse_reply

MARKER = re.compile(r"\[video:(\d+)\]")
FRAGMENTS = [
    "<video>", "</video>", "<video0>", "</video0>", "<video1>", "</video12>", "<VIDEO>", "</Video>",
    "<video >", "<video\t>", "< video>", "<videox>", "<b>", "</b>", "<script>alert(1)</script>", "<", ">",
    "<<", ">>", "\x00", "\x1b[31m", "\u200b", "\ufe64video\ufe65", "\n", "\t", "  ", "é", "🎬", "[", "]",
]
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fold(text: str) -> str:
    return " ".join(text.split())


def assert_same_layout(got: str, source: str) -> None:
    """`got` is `source` tidied: the same words on the same non-blank lines, each non-first
    line with its indentation, no trailing spaces, at most one blank line in a row."""
    def rows(text: str) -> list[list[str]]:
        return [line.split() for line in text.splitlines() if line.split()]

    assert rows(got) == rows(source)
    assert got == got.strip()
    assert "\n\n\n" not in got
    assert all(line == line.rstrip() for line in got.splitlines())
    indents = [line[: len(line) - len(line.lstrip())] for line in source.splitlines() if line.split()]
    assert [line[: len(line) - len(line.lstrip())] for line in got.splitlines() if line.split()][1:] == indents[1:]


replies = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40)), max_size=30).map("".join)


def assert_well_formed(parsed: ParsedReply, max_chars: int) -> None:
    for caption in parsed.captions:
        assert caption, "empty caption"
        assert caption == caption.strip()
        assert len(caption) <= max_chars
        assert "<" not in caption and ">" not in caption
        bad = [ch for ch in caption if unicodedata.category(ch).startswith("C")]
        assert not bad, f"control/format characters {bad!r} in {caption!r}"
        assert "  " not in caption
    assert len(parsed.captions) <= MAX_CAPTIONS


@PROPERTY_SETTINGS
@given(reply=replies, max_chars=st.integers(min_value=1, max_value=400))
def test_any_reply_parses_to_clean_captions(reply: str, max_chars: int) -> None:
    parsed = parse_reply(reply, max_caption_chars=max_chars)
    assert_well_formed(parsed, max_chars)


@PROPERTY_SETTINGS
@given(reply=st.text())
def test_arbitrary_unicode_never_raises(reply: str) -> None:
    assert_well_formed(parse_reply(reply), DEFAULT_MAX_CAPTION_CHARS)


@PROPERTY_SETTINGS
@given(reply=replies.filter(lambda r: "[" not in r))
def test_one_marker_per_caption_numbered_in_order(reply: str) -> None:
    # Replies with '[' are excluded: a reply may itself spell "[video:0]" (see test below).
    parsed = parse_reply(reply)
    numbers = [int(n) for n in MARKER.findall(parsed.text)]
    assert numbers == list(range(len(parsed.captions)))


@PROPERTY_SETTINGS
@given(text=st.text())
def test_text_without_tags_round_trips(text: str) -> None:
    assume(_TAG.search(text) is None)
    parsed = parse_reply(text)
    assert parsed.captions == () and not parsed.truncated
    assert_same_layout(parsed.text, text)


plain = st.text(alphabet=st.characters(exclude_characters="<>["), max_size=30)
caption_text = st.text(alphabet=string.ascii_letters + string.digits + " .,!?'-", min_size=1, max_size=60).filter(
    lambda s: s.strip())


@PROPERTY_SETTINGS
@given(
    parts=st.lists(st.tuples(plain, caption_text, st.sampled_from(["", "0", "1", "7"]), st.booleans()),
                   max_size=MAX_CAPTIONS),
    tail=plain,
)
def test_well_formed_replies_give_back_their_captions(parts, tail: str) -> None:
    reply, expected_text, expected_captions = "", "", []
    for before, caption, number, upper in parts:
        name = "VIDEO" if upper else "video"
        reply += f"{before}<{name}{number}>{caption}</{name}{number}>"
        expected_text += f"{before}[video:{len(expected_captions)}]"
        expected_captions.append(fold(caption))
    reply += tail
    parsed = parse_reply(reply)
    assert parsed.captions == tuple(expected_captions)
    assert_same_layout(parsed.text, expected_text + tail)
    assert not parsed.truncated


# -- named cases ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "text", "captions", "truncated"),
    [
        ("Here you go: <video>a red circle</video>", "Here you go: [video:0]", ("a red circle",), False),
        ("Sure: <video>a red circle moves", "Sure: [video:0]", ("a red circle moves",), True),  # unclosed
        ("<video>a <video1>blue</video1> square</video> done", "[video:0] done", ("a blue square",), False),  # nested
        ("before <video></video> after", "before after", (), False),  # empty
        ("before <video> \n\t </video> after", "before after", (), False),  # whitespace-only
        ("<video>a <b>bold</b> <i>move</i></video>", "[video:0]", ("a bold move",), False),  # markup inside
        ("<video>cats <script>alert(1)</script></video>", "[video:0]", ("cats alert(1)",), False),
        ("<video>a > b</video>", "[video:0]", ("a b",), False),  # a bare bracket is dropped
        ("<video>1 < 2 > 0</video>", "[video:0]", ("1 0",), False),  # "< 2 >" reads as markup: dropped
        ("oops</video> stray </video1> close", "oops stray close", (), False),  # stray closers
        ("<video0>first</video0> and <video1>second</video1>", "[video:0] and [video:1]", ("first", "second"), False),
        ("<video1>second</video1> <video0>first</video0>", "[video:0] [video:1]", ("second", "first"), False),
        ("<VIDEO>Loud</Video> <Video2>Mixed</VIDEO2>", "[video:0] [video:1]", ("Loud", "Mixed"), False),  # case
        ("<video >spaced</video >", "[video:0]", ("spaced",), False),
        ("<video>a</video7>", "[video:0]", ("a",), False),  # any closer closes
        ("<video>tab\there\x00 and\u200b bell\x07</video>", "[video:0]", ("tab here and bell",), False),  # controls
        ("no   tags\n\n\n\nat all  ", "no tags\n\nat all", (), False),  # lines kept, blank runs folded
        ("Run:\n```\ndef f():\n    return 1\n```", "Run:\n```\ndef f():\n    return 1\n```", (), False),  # code
        ("1. one\n2. <video>a cat</video>\n   indented", "1. one\n2. [video:0]\n   indented", ("a cat",), False),
        ("< video>not a tag</ video>", "< video>not a tag</ video>", (), False),
    ],
)
def test_named_cases(reply: str, text: str, captions: tuple[str, ...], truncated: bool) -> None:
    assert parse_reply(reply) == ParsedReply(text=text, captions=captions, truncated=truncated)


def test_overlong_caption_is_cut_on_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    parsed = parse_reply(f"<video>{words}</video>", max_caption_chars=50)
    (caption,) = parsed.captions
    assert len(caption) <= 50
    assert words.startswith(caption) and caption.split()[-1] in words.split()  # no half word
    assert len(caption) > 25


def test_overlong_single_word_is_cut_hard() -> None:
    (caption,) = parse_reply("<video>" + "x" * 1000 + "</video>").captions
    assert caption == "x" * DEFAULT_MAX_CAPTION_CHARS


def test_captions_beyond_the_cap_are_dropped_with_their_markers() -> None:
    reply = " ".join(f"<video>clip {i}</video>" for i in range(MAX_CAPTIONS + 3))
    parsed = parse_reply(reply)
    assert parsed.captions == tuple(f"clip {i}" for i in range(MAX_CAPTIONS))
    assert MARKER.findall(parsed.text) == [str(i) for i in range(MAX_CAPTIONS)]


def test_literal_marker_text_in_a_reply_is_ambiguous() -> None:
    """Documents a known limit: the reply's own "[video:0]" is not escaped, so it reads
    like a marker. Consumers should map markers by position in `captions`, not trust
    every "[video:N]" in the text."""
    parsed = parse_reply("[video:0] <video>a</video>")
    assert parsed.captions == ("a",)
    assert MARKER.findall(parsed.text) == ["0", "0"]
