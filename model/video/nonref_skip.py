"""Forward reads that skip the frames nothing needs: `skip_frame="NONREF"` before the target.

An exact read decodes from a keyframe forward to the frame on screen at its target (the
last frame whose pts is <= the target). On a stream with B-frames many of the frames
before it are non-reference frames: no other frame is predicted from them, so a decoder
told to drop them (`AVDISCARD_NONREF`) still decodes every later frame bit for bit.

Which packets may be dropped: one whose pts is below that of a packet already demuxed
that is still <= the target. A frame shown later, but not after the target, exists, so
the dropped one is not the frame on screen at the target. The first packets of a GOP
(decode order I0 P4 B2 b1 b3 ...) thus decode, and every non-reference frame with a
later frame ahead of it before the target is dropped; reference frames are never
dropped (the decoder keeps them whatever the setting), and packets at or after the
target decode normally. On a stream without non-reference frames (all-intra, or P-only
with x264's ultrafast preset) nothing changes.

The setting is changed between packets. A frame-threaded decoder copies it into the
thread that takes a packet when the packet is submitted (`update_context_from_user` in
FFmpeg's libavcodec/pthread_frame.c), so it applies per packet there too. Such a decoder
takes packets ahead of its output, so a packet may be judged against an earlier target
than the one it is read for; that only drops fewer frames, because a frame below a later
frame that is <= an earlier target is not on screen at any later target.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream


class UnneededFrames:
    """Per forward read: which packets, given in decode order, the target does not need.

    `aim(target)` sets the target (targets only grow within a read); `skippable(pts)` is
    asked once a packet, in demux order, and records it."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.best: int | None = None  # the highest pts demuxed so far that is <= target
        self.later: list[int] = []  # min-heap of pts demuxed so far that are > target

    def aim(self, target: int) -> None:
        self.target = target
        while self.later and self.later[0] <= target:
            pts = heapq.heappop(self.later)
            self.best = pts if self.best is None else max(self.best, pts)

    def skippable(self, pts: int) -> bool:
        if self.target is None:
            return False
        skip = self.best is not None and pts < self.best
        if pts <= self.target:
            self.best = pts if self.best is None else max(self.best, pts)
        else:
            heapq.heappush(self.later, pts)
        return skip


def decode_skipping(container: InputContainer, stream: VideoStream, unneeded: UnneededFrames
                    ) -> Iterator[VideoFrame]:
    """`container.decode(stream)`, with the packets `unneeded` names decoded under NONREF.

    Frames come out in presentation order as from `container.decode`; the dropped ones
    never do."""
    codec = stream.codec_context
    skipping = False
    try:
        for packet in container.demux(stream):
            skip = packet.pts is not None and unneeded.skippable(packet.pts)
            if skip != skipping:
                codec.skip_frame = "NONREF" if skip else "DEFAULT"
                skipping = skip
            yield from packet.decode()
    finally:
        if skipping:
            codec.skip_frame = "DEFAULT"
