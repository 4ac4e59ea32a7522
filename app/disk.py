"""How many bytes an upload may still write under DATA_DIR (DISK_MAX_BYTES, DISK_MIN_FREE_BYTES).

The stored total is a walk of the data directories, cached for a few seconds so that a
burst of uploads walks once; the free space is asked of the filesystem every time."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from app.uploads import Budget, disk_full
from gpt4video.settings import Settings

USAGE_CACHE_S = 5.0


def walk_files(root: Path) -> Iterator[os.DirEntry]:
    """Regular files below `root`, depth first, lazily (a walk may be spread over many calls)."""
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                children = list(entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in children:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry


def tree_bytes(roots: Iterable[Path]) -> int:
    """Bytes of the regular files below `roots` (missing roots count 0)."""
    total = 0
    for root in roots:
        for entry in walk_files(root):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


class DiskGuard:
    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self.max_bytes = settings.disk_max_bytes
        self.min_free_bytes = settings.disk_min_free_bytes
        self._usage: tuple[float, int] | None = None  # (measured at, bytes)

    def stored_bytes(self) -> int:
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] > USAGE_CACHE_S:
            roots = [self.data_dir / name for name in ("videos", "outputs", "tmp")]
            self._usage = (now, tree_bytes(roots))
        return self._usage[1]

    def added(self, nbytes: int) -> None:
        """Count bytes just written, so uploads within one cache period see each other."""
        if self._usage is not None:
            self._usage = (self._usage[0], self._usage[1] + nbytes)

    def room(self) -> int | None:
        """Bytes that may still be written; None when neither limit is set."""
        limits = []
        if self.min_free_bytes:
            limits.append(shutil.disk_usage(self.data_dir).free - self.min_free_bytes)
        if self.max_bytes:
            limits.append(self.max_bytes - self.stored_bytes())
        return max(0, min(limits)) if limits else None

    def budget(self) -> Budget | None:
        """The upload budget of the disk; raises 507 at once when there is no room at all."""
        room = self.room()
        if room is None:
            return None
        if room == 0:
            raise disk_full()
        return Budget(room, disk_full)
