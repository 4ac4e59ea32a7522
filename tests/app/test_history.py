"""A reply sent back in the next request's history reads to the model as it was written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from app.errors import Unprocessable
from app.schemas import ChatMessageFields, SamplingFields
from app.services.chat import ChatContext, build_request
from app.uploads import VideoStore
from gpt4video.jobs import JobStore
from gpt4video.settings import Settings
from model.tags import parse_reply, restore_tags


def test_restore_tags_inverts_parse_reply() -> None:
    raw = "Here you go: <video>a red circle moves up</video> and <video>a blue square falls</video>."
    parsed = parse_reply(raw)
    assert restore_tags(parsed.text, parsed.captions) == raw
    assert restore_tags("see [video:3]", ("only one",)) == "see [video:3]"  # no caption: left alone


def _turns(messages: list[dict], tmp_path: Path) -> list:
    settings = Settings(data_dir=tmp_path)

    async def run() -> list:
        conn = aioredis.from_url(settings.redis_url)
        jobs = JobStore(redis.Redis.from_url(settings.redis_url), settings.job_record_ttl_s)
        try:
            ctx = ChatContext(settings, conn, jobs, VideoStore(tmp_path), owner="k")
            parsed = [ChatMessageFields.model_validate(m) for m in messages]
            return (await build_request(ctx, parsed, SamplingFields(), stream=False)).turns
        finally:
            await conn.aclose()
            jobs.redis.close()

    return asyncio.run(run())


def test_an_earlier_reply_reaches_the_model_with_its_caption_tags(tmp_path: Path) -> None:
    # The reply's `message` ({"content": "Here is the video: [video:0]", "captions": [...]})
    # sent back as it came: without the captions the model would see a marker it never wrote.
    turns = _turns([
        {"role": "user", "content": "Make a clip of a red circle moving up."},
        {"role": "assistant", "content": "Here is the video: [video:0]", "captions": ["a red circle moves up"]},
        {"role": "user", "content": "Now make it blue."},
    ], tmp_path)
    assert [t.content for t in turns] == [
        "Make a clip of a red circle moving up.", "Here is the video: <video>a red circle moves up</video>",
        "Now make it blue."]


def test_captions_on_a_user_message_are_422(tmp_path: Path) -> None:
    with pytest.raises(Unprocessable) as err:
        _turns([{"role": "user", "content": "hi", "captions": ["a red circle moves up"]}], tmp_path)
    assert err.value.code == "captions_on_non_assistant"
