"""Instruction-data builder: captions -> GPT4Video-style conversations (JSONL, `Conversation`).

Input: a shapes JSONL (captions + attributes) or a WebVid-style CSV (video id, caption).
Output, one `model.data.schema.Conversation` a line, mixing:
- `understanding`: one video, several rounds of questions (shape, colour, motion, count
  when attributes are known; "describe the video" always), sometimes ending with a request
  for a variation answered with a tagged caption;
- `generation`: the user asks for a video; the assistant answers `<video>caption</video>`;
- `multi_video`: two or more videos whose captions are grouped by MiniLM similarity;
- `refusal`: the safety helper's refusal conversations, when that module is present.
Video paths are written relative to the output file. Deterministic per seed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from model.data.grouping import Encoder, GroupingConfig, group_captions
from model.data.schema import Conversation, Message
from model.data.shapes import WorldConfig, caption_for, read_records, sample_objects
from model.data.writers import CaptionItem, DialogueWriter, OpenAIChatWriter, TemplateWriter, WriterError

log = logging.getLogger(__name__)


class CaptionFileError(ValueError):
    """The caption file cannot be read as a shapes JSONL or a WebVid-style CSV."""


class BuilderConfig(BaseModel):
    seed: int = 0
    understanding_per_video: int = Field(default=1, ge=0)
    generation_per_video: float = Field(default=1.0, ge=0, description="generation dialogues per video")
    multi_video_max_groups: int = Field(default=10_000, ge=0)
    group_top_k: int = Field(default=1, ge=1)
    group_threshold: float = Field(default=0.6, ge=-1, le=1)
    include_refusals: bool = True
    min_rounds: int = Field(default=2, ge=1)
    max_rounds: int = Field(default=4, ge=1)


# -- reading captions ------------------------------------------------------------------------
def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def read_caption_items(path: Path, out_dir: Path, video_dir: Path | None = None) -> list[CaptionItem]:
    """Shapes JSONL (`.jsonl`) or WebVid-style CSV (`videoid`, `name`) -> caption items."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [
            CaptionItem(video=_relative(path.parent / r.video, out_dir), caption=r.caption, record=r)
            for r in read_records(path)
        ]
    if path.suffix == ".csv":
        videos = Path(video_dir) if video_dir else path.parent / "videos"
        items = []
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            id_key = next((k for k in ("videoid", "video_id", "video") if k in (reader.fieldnames or [])), None)
            cap_key = next((k for k in ("name", "caption") if k in (reader.fieldnames or [])), None)
            if id_key is None or cap_key is None:
                raise CaptionFileError(
                    f"{path}: need a video id column (videoid) and a caption column (name); "
                    f"found {reader.fieldnames}"
                )
            for row in reader:
                caption = " ".join(row[cap_key].split())
                if caption:
                    items.append(CaptionItem(_relative(videos / f"{row[id_key]}.mp4", out_dir), caption))
        return items
    raise CaptionFileError(f"{path}: expected a .jsonl (shapes) or .csv (WebVid-style) caption file")


# -- building ----------------------------------------------------------------------------
def _conversation(cid: str, source: str, videos: Sequence[str], messages: list[Message]) -> Conversation:
    return Conversation(id=cid, source=source, videos=list(videos), messages=messages)


def refusal_conversations() -> list[Conversation]:
    """The safety helper's refusal dialogues (train split of its prompt set), if installed."""
    try:
        from model.safety.data import load_prompts
        from model.safety.refusal_data import build_conversations as build_refusals
    except ImportError:
        log.info("model.safety.refusal_data not present: no refusal conversations")
        return []
    return build_refusals(load_prompts())


def build_conversations(
    items: Sequence[CaptionItem],
    cfg: BuilderConfig,
    writer: DialogueWriter,
    encoder: Encoder | None,
    prefix: str = "conv",
) -> Iterator[Conversation]:
    """All conversations for `items`; the multi-video ones need `encoder` (skipped if None)."""
    rng = np.random.default_rng(cfg.seed)
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"{prefix}-{n:07d}"

    for item in items:
        for _ in range(cfg.understanding_per_video):
            try:
                yield _conversation(next_id(), "understanding", [item.video], writer.single_video(item, rng))
            except WriterError as exc:
                log.warning("understanding dialogue for %s skipped: %s", item.video, exc)

    world = WorldConfig()
    for i in range(round(cfg.generation_per_video * len(items))):
        try:
            if items and items[0].record is not None:
                objects = sample_objects(rng, world, world.min_frames)
                messages = writer.generation(caption_for(objects), rng, objects)
            else:
                messages = writer.generation(items[i % len(items)].caption, rng)
            yield _conversation(next_id(), "generation", [], messages)
        except WriterError as exc:
            log.warning("generation dialogue skipped: %s", exc)

    if encoder is not None and len(items) >= 2 and cfg.multi_video_max_groups > 0:
        grouping = GroupingConfig(top_k=cfg.group_top_k, threshold=cfg.group_threshold)
        groups = group_captions([it.caption for it in items], encoder, grouping)
        for group in groups[: cfg.multi_video_max_groups]:
            members = [items[j] for j in group]
            try:
                messages = writer.multi_video(members, rng)
                yield _conversation(next_id(), "multi_video", [m.video for m in members], messages)
            except WriterError as exc:
                log.warning("multi-video dialogue skipped: %s", exc)

    if cfg.include_refusals:
        yield from refusal_conversations()


def write_jsonl(conversations: Iterator[Conversation], out: Path) -> dict[str, int]:
    """Write conversations atomically; return the count per source."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    counts: dict[str, int] = {}
    with tmp.open("w") as fh:
        for conv in conversations:
            fh.write(conv.model_dump_json() + "\n")
            counts[conv.source] = counts.get(conv.source, 0) + 1
    tmp.replace(out)
    return counts


def read_conversations(path: Path) -> list[Conversation]:
    with Path(path).open() as fh:
        return [Conversation.model_validate_json(line) for line in fh if line.strip()]


def build_file(
    captions: Path, out: Path, cfg: BuilderConfig, writer: DialogueWriter | None = None,
    encoder: Encoder | None = None, video_dir: Path | None = None, prefix: str | None = None,
) -> dict[str, int]:
    items = read_caption_items(captions, out.parent, video_dir)
    writer = writer or TemplateWriter(min_rounds=cfg.min_rounds, max_rounds=cfg.max_rounds)
    convs = build_conversations(items, cfg, writer, encoder, prefix=prefix or Path(captions).stem)
    return write_jsonl(convs, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video data instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, required=True, help="shapes .jsonl or WebVid-style .csv")
    parser.add_argument("--out", type=Path, required=True, help="output conversations .jsonl")
    parser.add_argument("--video-dir", type=Path, help="CSV input: directory of <videoid>.mp4")
    parser.add_argument("--config", type=Path, help="BuilderConfig as JSON (flags below override it)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--group-top-k", type=int)
    parser.add_argument("--group-threshold", type=float)
    parser.add_argument("--multi-video-max-groups", type=int, help="cap on multi-video dialogues")
    parser.add_argument("--no-multi-video", action="store_true", help="skip similarity grouping")
    parser.add_argument("--no-refusals", action="store_true")
    parser.add_argument("--writer", choices=("template", "openai"), default="template")
    parser.add_argument("--openai-url", help="OpenAI-compatible base URL, e.g. http://host:8001/v1")
    parser.add_argument("--openai-model", help="model name for the chat endpoint")
    parser.add_argument("--openai-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    args = parser.parse_args(argv)

    cfg = BuilderConfig.model_validate_json(args.config.read_text()) if args.config else BuilderConfig()
    overrides = {"seed": args.seed, "group_top_k": args.group_top_k, "group_threshold": args.group_threshold,
                 "multi_video_max_groups": args.multi_video_max_groups}
    cfg = cfg.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if args.no_refusals:
        cfg = cfg.model_copy(update={"include_refusals": False})
    writer: DialogueWriter | None = None
    if args.writer == "openai":
        if not args.openai_url or not args.openai_model:
            parser.error("--writer openai needs --openai-url and --openai-model")
        writer = OpenAIChatWriter(args.openai_url, args.openai_model, os.environ.get(args.openai_key_env))
    encoder = None
    if not args.no_multi_video:
        from model.text_encoder import MiniLMEncoder

        encoder = MiniLMEncoder()
    counts = build_file(args.captions, args.out, cfg, writer, encoder, args.video_dir)
    print(f"{sum(counts.values())} conversations -> {args.out} " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
