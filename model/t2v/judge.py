"""A pixel-statistics judge: which coloured shapes a video shows and how they move.

No model: for a video `(T, H, W, 3)` uint8,
- the background is each frame's median luma; a pixel far from it is foreground (luma,
  not colour: H.264 keeps luma at full resolution but halves chroma, which at 32 px
  smears a small object's colour over its neighbours);
- each connected foreground region takes the palette colour nearest its median colour;
  one colour is one object (the world never draws two objects of one colour), kept if it
  covers enough of the frames;
- shape, from the object's mask in each frame: the world's own circle, square and
  (upward) triangle masks (`model.data.shapes`) are fitted to its bounding box, with a
  little jitter of centre and size, and the best intersection-over-union wins; the
  median over the frames decides (fill ratio alone confuses small circles and squares
  once H.264 has blurred their edges at 32 px);
- motion, from its centroid path: the least-squares slope over the frames, times the
  clip's length, gives the travel; under `still_travel` of the frame side it stays still,
  else it moves along the dominant axis.
Thresholds are the module's constants; the tests hold them to >= 0.95 per attribute on
the shapes generator's own videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.data.shapes import COLOURS, RGB, SHAPES, ShapeObject, _object_mask, first_mover

FOREGROUND_LUMA = 30.0  # luma difference from the frame's median (the darkest palette colours are ~60 above)
MIN_PIXELS_PER_FRAME = 0.004  # of the frame's area, averaged over the frames, to count as an object
JITTER = (-0.5, 0.0, 0.5)  # pixels of centre offset tried when fitting a shape
SCALES = (0.9, 1.0, 1.1)  # radius factors tried
STILL_TRAVEL = 0.12  # of the frame side

_PALETTE = np.array([RGB[c] for c in COLOURS], dtype=np.float32)  # (K, 3)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (3,) BT.601, as H.264 keeps it at full resolution


@dataclass(frozen=True)
class SeenObject:
    colour: str
    shape: str
    motion: str
    pixels: float  # mean pixels a frame
    fit: dict[str, float]  # shape -> median best IoU of that shape's mask
    travel: tuple[float, float]  # (dx, dy) over the clip, fractions of the frame side


def judge_video(frames: np.ndarray) -> list[SeenObject]:
    """The objects `frames` `(T, H, W, 3)` show, largest first."""
    t, h, w, _ = frames.shape
    video = frames.astype(np.float32)  # (T, H, W, 3)
    luma = video @ _LUMA  # (T, H, W)
    background = np.median(luma.reshape(t, -1), axis=1)  # (T,)
    far = np.abs(luma - background[:, None, None]) > FOREGROUND_LUMA  # (T, H, W)
    label = np.full((t, h, w), -1)  # (T, H, W): palette index of each foreground region, or -1
    for i in range(t):
        regions, count = ndimage.label(far[i], structure=np.ones((3, 3)))  # (H, W) region ids
        for region in range(1, count + 1):
            inside = regions == region  # (H, W)
            # One colour a region, from its median: H.264 halves chroma resolution, so an
            # object's edge pixels drift towards other palette colours one by one.
            colour = np.median(video[i][inside], axis=0)  # (3,)
            label[i][inside] = int(np.linalg.norm(_PALETTE - colour, axis=-1).argmin())
    seen = []
    for k, colour in enumerate(COLOURS):
        masks = label == k  # (T, H, W)
        pixels = float(masks.sum()) / t
        if pixels < MIN_PIXELS_PER_FRAME * h * w:
            continue
        seen.append(_describe(colour, masks, pixels, h, w))
    return sorted(seen, key=lambda o: -o.pixels)


def _describe(colour: str, masks: np.ndarray, pixels: float, h: int, w: int) -> SeenObject:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # (H, W) pixel centres
    fits, centres, frames_seen = [], [], []
    for i, mask in enumerate(masks):  # mask: (H, W)
        ys, xs = np.nonzero(mask)
        if len(ys) < 3:
            continue
        fits.append([_best_iou(shape, mask, ys, xs, xx, yy) for shape in SHAPES])
        centres.append((xs.mean() / w, ys.mean() / h))
        frames_seen.append(i)
    if not fits:
        return SeenObject(colour, "circle", "still", pixels, {}, (0.0, 0.0))
    fit = dict(zip(SHAPES, np.median(np.array(fits), axis=0).tolist(), strict=True))
    travel = _travel(np.array(frames_seen, np.float32), np.array(centres, np.float32), len(masks))
    return SeenObject(colour, max(fit, key=fit.get), _motion(travel), pixels, fit, travel)


def _best_iou(shape: str, mask: np.ndarray, ys: np.ndarray, xs: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> float:
    """Best IoU of `shape`'s mask, placed in the bounding box of `mask` `(H, W)`, with jitter."""
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()) + 1.0, float(ys.min()), float(ys.max()) + 1.0
    half_w, half_h = (x1 - x0) / 2, (y1 - y0) / 2
    cx = (x0 + x1) / 2
    if shape == "circle":
        r, cy = (half_w + half_h) / 2, (y0 + y1) / 2
    elif shape == "square":
        r, cy = (half_w + half_h) / 2 / 0.85, (y0 + y1) / 2
    else:  # apex at cy - r, base at cy + 0.8 r, half-width r at the base
        r = (half_w + (y1 - y0) / 1.8) / 2
        cy = y0 + r
    best = 0.0
    for dx in JITTER:
        for dy in JITTER:
            for scale in SCALES:
                model = _object_mask(shape, cx + dx, cy + dy, r * scale, xx, yy)  # (H, W)
                union = np.logical_or(model, mask).sum()
                best = max(best, float(np.logical_and(model, mask).sum()) / max(1, union))
    return best


def _travel(frames: np.ndarray, centres: np.ndarray, num_frames: int) -> tuple[float, float]:
    """Least-squares slope of the centroid `(n, 2)` over frame index, times the clip's span."""
    if len(frames) < 2:
        return (0.0, 0.0)
    f = frames - frames.mean()  # (n,)
    slope = (f[:, None] * (centres - centres.mean(axis=0))).sum(axis=0) / max(1e-6, float((f * f).sum()))  # (2,)
    dx, dy = slope * (num_frames - 1)
    return (float(dx), float(dy))


def _motion(travel: tuple[float, float]) -> str:
    dx, dy = travel
    if max(abs(dx), abs(dy)) < STILL_TRAVEL:
        return "still"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


@dataclass(frozen=True)
class Verdict:
    """Per attribute: did the video show what was asked (None: the attribute was not asked)."""

    colour: bool
    shape: bool
    motion: bool

    def as_dict(self) -> dict[str, bool]:
        return {"colour": self.colour, "shape": self.shape, "motion": self.motion}


def score(asked: Sequence[ShapeObject], seen: Sequence[SeenObject]) -> Verdict:
    """Compare what a caption asked for with what the judge saw.

    One object: the largest object seen must have the asked colour, shape and motion.
    Two objects: colour, the two largest objects' colours are the asked pair; shape, the
    object of each asked colour has that object's shape; motion, the object of the
    caption's mover colour moves that way and the other stays still (both still: both).
    """
    if len(asked) == 1:
        if not seen:
            return Verdict(False, False, False)
        want, got = asked[0], seen[0]
        return Verdict(got.colour == want.colour, got.shape == want.shape, got.motion == want.motion)
    by_colour = {o.colour: o for o in seen[:2]}
    colour = set(by_colour) == {o.colour for o in asked}
    shape = all(o.colour in by_colour and by_colour[o.colour].shape == o.shape for o in asked)
    mover = first_mover(asked)
    expected = {o.colour: ("still" if mover is None or o is not mover else o.motion) for o in asked}
    motion = all(c in by_colour and by_colour[c].motion == m for c, m in expected.items())
    return Verdict(colour, shape, motion)
