"""`probe_isolated`: probe an untrusted upload in a child process with a memory cap.

The child (`python -m model.video.probe_child`) imports PyAV, then caps its address
space with RLIMIT_AS at its current size plus `memory_mb` (so `memory_mb` bounds what the
file makes it allocate; Python + PyAV themselves take about 250 MB of address space), runs
`probe` and decodes the first frame (so a file whose header parses but whose pictures do
not is caught at upload time), and writes one JSON line to stdout. The parent gives it
`timeout_s` of wall-clock time and kills it after that. A child that is killed, crashes
or runs out of memory (MemoryError, FFmpeg's ENOMEM, or a decode failure at the cap)
gives `ProbeTimeout`; a typed error raised in the child is raised again, with its code,
in the parent.

Blocking: call it from a worker thread in async code (e.g. `anyio.to_thread.run_sync`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from model.video.errors import ERRORS_BY_CODE, CorruptVideo, ProbeTimeout, VideoNotFound
from model.video.metadata import VideoInfo, VideoLimits

logger = logging.getLogger(__name__)

CHILD_MODULE = "model.video.probe_child"
_STDERR_TAIL_BYTES = 2000
# The directory holding the `model` package, so the child imports this same code
# whatever the parent's working directory.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def probe_isolated(path: str | Path, limits: VideoLimits, timeout_s: float, memory_mb: int) -> VideoInfo:
    """`probe(path, limits)` plus a first-frame decode, in a child allowed `memory_mb` of
    address space beyond its baseline and `timeout_s` seconds of wall-clock time.
    Never hangs: the child is killed at the timeout.

    Raises the same typed errors as `probe` (and ZeroFrames / CorruptVideo when the first
    frame does not decode), or ProbeTimeout when the child ran out of time or memory.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 1:
        raise ValueError(f"memory_mb must be >= 1, got {memory_mb}")
    if not os.path.exists(path):
        raise VideoNotFound(f"no video file at {path}")
    request = {"path": str(path), "limits": asdict(limits), "memory_mb": memory_mb}
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_child_environment(),
            close_fds=True,
        )
        try:
            stdout, _ = process.communicate(json.dumps(request).encode(), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise ProbeTimeout(
                f"probing {Path(path).name} took longer than {timeout_s:g} s; the file is "
                "too complex or hostile to accept"
            ) from None
        except BaseException:
            process.kill()
            process.communicate()
            raise
        stderr.seek(max(0, stderr.seek(0, os.SEEK_END) - _STDERR_TAIL_BYTES))
        stderr_tail = stderr.read().decode("utf-8", "replace")
    return _parse_reply(stdout, process.returncode, stderr_tail, path, memory_mb)


def _parse_reply(stdout: bytes, returncode: int, stderr_tail: str, path: str | Path, memory_mb: int) -> VideoInfo:
    reply = _last_json_line(stdout)
    if returncode != 0 or reply is None:
        logger.warning("probe child for %s exited with %s; stderr tail: %s", path, returncode, stderr_tail)
        raise ProbeTimeout(
            f"the probe of {Path(path).name} died (exit status {returncode}), most likely out of"
            f" memory under its {memory_mb} MB cap; the file is too demanding to accept"
        )
    if reply.get("ok"):
        return VideoInfo(**reply["info"])
    error_class = ERRORS_BY_CODE.get(reply.get("code", ""), CorruptVideo)
    raise error_class(reply.get("message", "the probe failed"))


def _last_json_line(stdout: bytes) -> dict | None:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    # Under RLIMIT_AS every thread's malloc arena and stack counts: keep them few.
    env.update(
        MALLOC_ARENA_MAX="2",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env
