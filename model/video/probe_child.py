"""Child process of `probe_isolated`: cap memory, probe, decode one frame, print JSON.

Reads {"path", "limits", "memory_mb"} as JSON on stdin; writes one JSON line on stdout:
{"ok": true, "info": {...}} or {"ok": false, "code": ..., "message": ...}. Any other
outcome (killed, crashed, out of memory) is reported by the parent as ProbeTimeout.

The cap is `memory_mb` of address space ON TOP of what the interpreter, numpy and PyAV
occupy once imported (about 250 MB of mostly shared libraries): so `memory_mb` bounds
what the file makes the probe allocate, not the fixed cost of Python. PyAV's lazily
imported modules are imported before the cap, so a tight cap cannot break an import
half-way and pass for a corrupt file.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys

_OUT_OF_MEMORY = "probing the video ran out of memory; the file is too demanding to accept"
# Modules PyAV imports on first use (av.stream.wrap_stream, decoding, conversion).
_WARM_MODULES = (
    "numpy",
    "av",
    "av.audio.stream",
    "av.subtitles.stream",
    "av.subtitles.subtitle",
    "av.video.stream",
    "av.video.frame",
    "av.video.reformatter",
    "model.video.first_frame",
)


def address_space_bytes() -> int:
    """This process's current virtual memory size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_address_space_bytes() -> int:
    """The most virtual memory this process has held (VmPeak; 0 where unknown)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cap_address_space(extra_mb: int) -> int:
    """Set RLIMIT_AS to the current size plus `extra_mb`; return the limit in bytes."""
    limit = address_space_bytes() + extra_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


def hit_the_cap(limit: int, extra_mb: int) -> bool:
    """Whether the process came close to its cap (so a failure is likely ENOMEM).

    FFmpeg's decoders do not always report a failed allocation as ENOMEM (H.264 says
    "invalid data"): a decode failure while the peak is within min(32 MB, half the
    headroom) of the cap is counted as running out of memory, not as a corrupt file.
    """
    margin = min(32, extra_mb / 2) * 1024 * 1024
    return peak_address_space_bytes() >= limit - margin


def run(request: dict, limit: int) -> dict:
    from model.video.errors import CorruptVideo, VideoError
    from model.video.first_frame import probe_and_decode_first_frame
    from model.video.metadata import VideoLimits

    try:
        info = probe_and_decode_first_frame(request["path"], VideoLimits(**request["limits"]))
    except CorruptVideo as exc:
        if hit_the_cap(limit, int(request["memory_mb"])):
            return {"ok": False, "code": "probe_timeout", "message": _OUT_OF_MEMORY}
        return {"ok": False, "code": exc.code, "message": str(exc)}
    except VideoError as exc:
        return {"ok": False, "code": exc.code, "message": str(exc)}
    except MemoryError:  # Python's or FFmpeg's ENOMEM under the address-space cap
        return {"ok": False, "code": "probe_timeout", "message": _OUT_OF_MEMORY}
    return {"ok": True, "info": info.to_dict()}


def main() -> int:
    request = json.loads(sys.stdin.read())
    for module in _WARM_MODULES:
        importlib.import_module(module)
    limit = cap_address_space(int(request["memory_mb"]))
    try:
        reply = run(request, limit)
    except MemoryError:
        reply = {"ok": False, "code": "probe_timeout", "message": _OUT_OF_MEMORY}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
