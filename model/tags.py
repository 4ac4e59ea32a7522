"""Caption tags in the model's reply: `<video>a caption</video>`, `<video3>…</video3>`.

The LLM asks for a video by writing a plain-text caption inside a tag. `parse_reply`
returns the reply with every tag replaced by a `[video:N]` marker (N indexes the
caption list) and the ordered, normalised captions. Rules, chosen so that nothing a
model can emit crashes the parser or smuggles markup into the T2V prompt:

- `<video>` and `<videoN>` open, `</video>` and `</videoN>` close (any number closes
  any open tag; case-insensitive).
- Nested tags inside a caption are treated as markup and dropped; the outermost pair
  delimits the caption.
- An unclosed tag runs to the end of the reply (a reply cut by `max_new_tokens` still
  yields its caption; `ParsedReply.truncated` says so).
- A stray closing tag is dropped from the text.
- Empty or whitespace-only captions yield no caption and no marker.
- Other markup inside a caption (`<b>`, `<script>`) is stripped; whitespace is folded;
  control characters are removed; the caption is capped at `max_caption_chars` on a
  word boundary.
- The text around the tags keeps its layout (`tidy_text`): line breaks and each line's
  indentation stay, so code and lists in an answer stay readable; spaces inside a line
  fold to one, trailing spaces go, and blank lines fold to one.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TAG = re.compile(r"<(/?)video(\d*)\s*>", re.IGNORECASE)
_MARKUP = re.compile(r"<[^<>]{0,200}>")
_SPACE = re.compile(r"\s+")
DEFAULT_MAX_CAPTION_CHARS = 300
MAX_CAPTIONS = 8


@dataclass(frozen=True)
class ParsedReply:
    text: str  # reply with tags replaced by `[video:N]` markers
    captions: tuple[str, ...]
    truncated: bool = False  # the last caption's tag was never closed


def tidy_text(text: str) -> str:
    """`text` with its lines and their indentation kept, spaces inside each line folded to
    one, trailing spaces dropped, runs of blank lines folded to one, and the ends stripped."""
    lines: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            if lines and lines[-1]:
                lines.append("")
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines.append(indent + " ".join(words))
    return "\n".join(lines).strip()


def normalize_caption(raw: str, max_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> str:
    text = unicodedata.normalize("NFKC", raw)
    text = _MARKUP.sub(" ", text)
    text = text.replace("<", " ").replace(">", " ")
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" or ch in "\t\n ")
    text = _SPACE.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    return text


def parse_reply(
    reply: str, max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS, max_captions: int = MAX_CAPTIONS
) -> ParsedReply:
    out: list[str] = []
    captions: list[str] = []
    depth = 0
    cursor = 0
    caption_start = 0

    def close_caption(end: int) -> None:
        caption = normalize_caption(reply[caption_start:end], max_caption_chars)
        if caption and len(captions) < max_captions:
            out.append(f"[video:{len(captions)}]")
            captions.append(caption)

    for match in _TAG.finditer(reply):
        is_close = match.group(1) == "/"
        if depth == 0:
            out.append(reply[cursor:match.start()])
            if not is_close:  # a stray close at depth 0 is just dropped
                depth = 1
                caption_start = match.end()
        elif is_close:
            depth -= 1
            if depth == 0:
                close_caption(match.start())
        else:
            depth += 1
        cursor = match.end()

    truncated = depth > 0
    if truncated:
        close_caption(len(reply))
    else:
        out.append(reply[cursor:])
    return ParsedReply(text=tidy_text("".join(out)), captions=tuple(captions), truncated=truncated)


_MARKER = re.compile(r"\[video:(\d+)\]")


def restore_tags(text: str, captions: tuple[str, ...] | list[str]) -> str:
    """The inverse of `parse_reply` for a reply kept in a conversation's history: each
    `[video:N]` marker becomes `<video>captions[N]</video>` again, so the model reads its
    earlier turn as it wrote it. Markers without a caption are left as they are."""
    def tag(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"<video>{captions[index]}</video>" if index < len(captions) else match.group(0)

    return _MARKER.sub(tag, text)
