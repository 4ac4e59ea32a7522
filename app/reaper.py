"""The retention reaper: removes expired uploads and outputs and orphaned temporaries.

It runs inside the API (a background task started by the app's lifespan). Each pass
looks at no more than REAPER_MAX_FILES files, resuming the walk where the previous pass
stopped, so a pass costs the same however many files are stored; a full sweep takes
`files / REAPER_MAX_FILES` passes.

- `videos/<xx>/<id>.video`: older than VIDEO_RETENTION_S since its last upload -> the file,
  its info and its owners go (under the lock uploads take, so a re-upload is never lost).
- `outputs/<job>.mp4`: older than OUTPUT_RETENTION_S -> removed (its job record was given
  the same lifetime by the t2v worker).
- temporaries (`tmp/upload-*`, `*.tmp` beside videos and outputs) and video info with no
  video: older than TMP_MAX_AGE_S -> removed (left by a killed process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from app.disk import walk_files
from app.services.videos import owners_key, video_lock
from app.uploads import VideoStore
from gpt4video.settings import Settings

log = logging.getLogger("gpt4video.reaper")


@dataclass
class ReapReport:
    examined: int = 0
    videos: int = 0
    outputs: int = 0
    temporaries: int = 0

    @property
    def removed(self) -> int:
        return self.videos + self.outputs + self.temporaries


class Reaper:
    def __init__(self, settings: Settings, store: VideoStore, connection: redis.Redis) -> None:
        self.settings = settings
        self.store = store
        self.redis = connection
        self.outputs = settings.outputs_dir
        self._walk: Iterator[os.DirEntry] | None = None

    def _sweep(self) -> Iterator[os.DirEntry]:
        yield from walk_files(self.store.root)
        yield from walk_files(self.outputs)
        yield from walk_files(self.store.tmp)

    def run_pass(self, now: float | None = None) -> ReapReport:
        """Look at up to REAPER_MAX_FILES files (at most one full sweep); remove what has expired."""
        now = time.time() if now is None else now
        report = ReapReport()
        restarted = self._walk is None
        if self._walk is None:
            self._walk = self._sweep()
        while report.examined < self.settings.reaper_max_files:
            entry = next(self._walk, None)
            if entry is None:  # end of a sweep: the next pass starts a new one
                self._walk = None
                if restarted:
                    break
                self._walk, restarted = self._sweep(), True
                continue
            report.examined += 1
            try:
                self._consider(Path(entry.path), now - entry.stat(follow_symlinks=False).st_mtime, report)
            except FileNotFoundError:
                continue  # removed meanwhile (a delete, another API's reaper)
        if report.removed:
            log.info("reaper: examined %d files, removed %d uploads, %d outputs, %d temporaries",
                     report.examined, report.videos, report.outputs, report.temporaries)
        return report

    def _consider(self, path: Path, age_s: float, report: ReapReport) -> None:
        s = self.settings
        name = path.name
        if name.endswith(".tmp") or path.parent == self.store.tmp:
            if age_s > s.tmp_max_age_s:
                path.unlink(missing_ok=True)
                report.temporaries += 1
        elif path.parent == self.outputs:
            if name.endswith(".mp4") and s.output_retention_s and age_s > s.output_retention_s:
                path.unlink(missing_ok=True)
                report.outputs += 1
        elif name.endswith(".video"):
            if s.video_retention_s and age_s > s.video_retention_s and self._expire_video(path.stem):
                report.videos += 1
        elif name.endswith(".json") and not path.with_suffix(".video").exists() and age_s > s.tmp_max_age_s:
            path.unlink(missing_ok=True)  # info whose video is gone (a commit cut short)
            report.temporaries += 1

    def _expire_video(self, video_id: str) -> bool:
        path = self.store.path_for(video_id)
        with video_lock(self.redis, video_id):
            try:  # re-check under the lock: an upload of the same bytes renews it
                if time.time() - path.stat().st_mtime <= self.settings.video_retention_s:
                    return False
            except FileNotFoundError:
                return False
            self.redis.delete(owners_key(video_id))
            return self.store.remove(video_id)

    async def run_forever(self) -> None:
        """A pass every REAPER_INTERVAL_S, in a thread; a failed pass is logged, not fatal."""
        while True:
            try:
                await asyncio.to_thread(self.run_pass)
            except Exception:
                log.exception("reaper pass failed; retrying next interval")
            await asyncio.sleep(self.settings.reaper_interval_s)
