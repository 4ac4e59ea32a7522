"""The retention reaper on a real data directory and a real Redis: one pass removes exactly
what has expired (uploads, outputs, orphaned temporaries) and its work per pass is bounded."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import redis

from app.reaper import Reaper
from app.services.videos import owners_key
from app.uploads import VideoStore
from gpt4video.settings import Settings
from tests.app.conftest import app_redis_url

DAY = 24 * 3600


@pytest.fixture
def connection() -> redis.Redis:
    conn = redis.Redis.from_url(app_redis_url())
    try:
        conn.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"these tests need a Redis server at {app_redis_url()}: {exc}")
    return conn


def _file(path: Path, age_s: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def _video(store: VideoStore, conn: redis.Redis, age_s: float) -> str:
    video_id = uuid.uuid4().hex * 2
    _file(store.path_for(video_id), age_s)
    _file(store.path_for(video_id).with_suffix(".json"), age_s, b"{}")
    conn.sadd(owners_key(video_id), "key-test")
    return video_id


def test_one_pass_removes_exactly_the_expired_files(tmp_path: Path, connection: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, video_retention_s=10 * DAY, output_retention_s=DAY,
                        tmp_max_age_s=3600, reaper_max_files=1000)
    store = VideoStore(tmp_path)
    outputs = settings.outputs_dir
    old_video, new_video = _video(store, connection, 11 * DAY), _video(store, connection, 9 * DAY)
    old_mp4, new_mp4 = _file(outputs / "a.mp4", 2 * DAY), _file(outputs / "b.mp4", 3600)
    old_tmp = [_file(store.tmp / "upload-1", 7200), _file(outputs / ".c.mp4.1.tmp", 7200),
               _file(store.path_for(new_video).with_name(f"{new_video}.json.2.tmp"), 7200)]
    live_tmp = [_file(store.tmp / "upload-2", 60), _file(outputs / ".d.mp4.3.tmp", 60)]
    orphan_info = _file(store.root / "ab" / ("ab" + "0" * 62 + ".json"), 7200, b"{}")

    report = Reaper(settings, store, connection).run_pass()

    assert (report.videos, report.outputs, report.temporaries) == (1, 1, 4)
    assert not store.path_for(old_video).exists() and not store.path_for(old_video).with_suffix(".json").exists()
    assert not connection.exists(owners_key(old_video))
    assert store.path_for(new_video).is_file() and connection.sismember(owners_key(new_video), "key-test")
    assert not old_mp4.exists() and new_mp4.is_file()
    assert not any(p.exists() for p in [*old_tmp, orphan_info])
    assert all(p.exists() for p in live_tmp)
    assert Reaper(settings, store, connection).run_pass().removed == 0  # nothing else has expired
    connection.delete(owners_key(new_video))


def test_a_pass_is_bounded_and_the_next_one_goes_on(tmp_path: Path, connection: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, output_retention_s=DAY, reaper_max_files=4)
    store = VideoStore(tmp_path)
    expired = [_file(settings.outputs_dir / f"{i}.mp4", 2 * DAY) for i in range(10)]
    reaper = Reaper(settings, store, connection)
    assert [reaper.run_pass().outputs for _ in range(3)] == [4, 4, 2]
    assert not any(p.exists() for p in expired)


def test_retention_zero_keeps_everything(tmp_path: Path, connection: redis.Redis) -> None:
    settings = Settings(data_dir=tmp_path, video_retention_s=0, output_retention_s=0)
    store = VideoStore(tmp_path)
    video_id = _video(store, connection, 1000 * DAY)
    mp4 = _file(settings.outputs_dir / "old.mp4", 1000 * DAY)
    assert Reaper(settings, store, connection).run_pass().removed == 0
    assert store.path_for(video_id).is_file() and mp4.is_file()
    connection.delete(owners_key(video_id))
