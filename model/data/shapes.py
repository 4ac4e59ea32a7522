"""The shapes world: short synthetic videos with captions from a small grammar.

One or two objects (circle, square, triangle; red, green, blue, yellow, white) on a dark
background; each moves left, right, up or down across the frame, or stays still. Sizes,
speeds and positions are random. Videos are written as H.264 MP4s (so the model sees
real compression) next to one JSONL a split (`train.jsonl`, `val.jsonl`, `test.jsonl`)
holding the caption and every attribute. Everything is deterministic per seed: video
`i` of a split draws from its own generator seeded by `(seed, split, i)`.

Caption grammar:
- one object:  "a red circle moves to the left" / "a red circle stays still"
- two objects: "a blue square and a yellow triangle; the square moves up"
               "a blue square and a yellow triangle; both stay still"
Two objects always differ in shape and in colour, so "the square" names one object. A
video's caption names them in shape order (`video_caption`); a generation request's
tagged caption keeps the order the user asked in (`caption_for`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from tqdm import tqdm

log = logging.getLogger(__name__)

Shape = Literal["circle", "square", "triangle"]
Colour = Literal["red", "green", "blue", "yellow", "white"]
Motion = Literal["left", "right", "up", "down", "still"]
SplitName = Literal["train", "val", "test"]

SHAPES: tuple[Shape, ...] = ("circle", "square", "triangle")
COLOURS: tuple[Colour, ...] = ("red", "green", "blue", "yellow", "white")
MOTIONS: tuple[Motion, ...] = ("left", "right", "up", "down", "still")
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")
RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (235, 215, 40),
    "white": (235, 235, 235),
}
DIRECTION: dict[str, tuple[float, float]] = {  # (dx, dy) in image coordinates
    "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "still": (0.0, 0.0),
}
MOTION_PHRASE: dict[str, str] = {
    "left": "moves to the left", "right": "moves to the right", "up": "moves up",
    "down": "moves down", "still": "stays still",
}


class ShapeObject(BaseModel):
    shape: Shape
    colour: Colour
    motion: Motion
    size: float = Field(description="radius in pixels")
    speed: float = Field(description="pixels a frame (0 when still)")
    start: tuple[float, float]  # centre (x, y) in the first frame
    end: tuple[float, float]  # centre (x, y) in the last frame


class ShapesRecord(BaseModel):
    """One line of a shapes JSONL."""

    id: str
    split: SplitName
    video: str = Field(description="MP4 path relative to the JSONL's directory")
    caption: str
    num_frames: int
    fps: int
    width: int
    height: int
    objects: list[ShapeObject] = Field(min_length=1, max_length=2)

    def frame_caption(self, k: int, n: int) -> str:
        """What frame `k` of `n` uniformly sampled frames shows: objects and where they are.

        Sample k sits at (2k+1)/(2n) of the duration (as `model.video.sample_frames` picks
        it); positions are named on a 3x3 grid ("a red circle at the top left").
        """
        index = min(self.num_frames - 1, ((2 * k + 1) * self.num_frames) // (2 * n))
        f = index / (self.num_frames - 1)
        parts = []
        for o in sorted(self.objects, key=lambda o: o.shape):
            x = o.start[0] + f * (o.end[0] - o.start[0])
            y = o.start[1] + f * (o.end[1] - o.start[1])
            parts.append(f"a {o.colour} {o.shape} at the {grid_position(x / self.width, y / self.height)}")
        return " and ".join(parts)


def grid_position(x: float, y: float) -> str:
    """Fractions of the frame -> 'top left', 'top', ..., 'centre', ..., 'bottom right'."""
    row = ("top", "", "bottom")[min(2, int(y * 3))]
    col = ("left", "", "right")[min(2, int(x * 3))]
    return " ".join(p for p in (row, col) if p) or "centre"


@dataclass(frozen=True)
class WorldConfig:
    size: int = 64  # frame width and height in pixels (even, for H.264)
    min_frames: int = 8
    max_frames: int = 16
    fps: int = 8
    two_object_prob: float = 0.3
    min_radius: float = 0.09  # as a fraction of the frame size
    max_radius: float = 0.16
    min_travel: float = 0.30  # distance a mover covers over the video, fraction of frame
    max_travel: float = 0.50
    crf: int = 23


def caption_for(objects: Sequence[ShapeObject]) -> str:
    """The grammar's caption, naming two objects in the order given.

    Generation tags use this in the order of the user's request (the assistant copies
    it); a video's own caption goes through `video_caption`, which fixes the order.
    """
    first = objects[0]
    if len(objects) == 1:
        return f"a {first.colour} {first.shape} {MOTION_PHRASE[first.motion]}"
    mover = first_mover(objects)
    if mover is None:
        return f"{object_names(objects)}; both stay still"
    return f"{object_names(objects)}; the {mover.shape} {MOTION_PHRASE[mover.motion]}"


def canonical_order(objects: Sequence[ShapeObject]) -> list[ShapeObject]:
    """Objects sorted by shape name (two objects always differ in shape)."""
    return sorted(objects, key=lambda o: o.shape)


def video_caption(objects: Sequence[ShapeObject]) -> str:
    """What a video shows, two objects named in shape order ("a blue circle and a red square; ...").

    With the drawn (random) order, a describer must pick which object to name first
    and then remember which one it named: small models repeat the first object ("a
    yellow circle and a yellow circle"). A fixed order removes that choice. Requests
    for a video keep the user's order (`caption_for`), so generation never reorders.
    """
    return caption_for(canonical_order(objects))


def object_names(objects: Sequence[ShapeObject]) -> str:
    """'a red circle and a blue square', in the objects' order."""
    return " and ".join(f"a {o.colour} {o.shape}" for o in objects)


def first_mover(objects: Sequence[ShapeObject]) -> ShapeObject | None:
    return next((o for o in objects if o.motion != "still"), None)


def _sample_object(
    rng: np.random.Generator, cfg: WorldConfig, num_frames: int, shape: str, colour: str, motion: str
) -> ShapeObject:
    s = cfg.size
    radius = float(rng.uniform(cfg.min_radius, cfg.max_radius) * s)
    dx, dy = DIRECTION[motion]
    travel = 0.0 if motion == "still" else float(rng.uniform(cfg.min_travel, cfg.max_travel) * s)
    lo, hi = radius + 1.0, s - radius - 1.0
    # Pick the start so that the whole path stays inside the frame.
    x0 = float(rng.uniform(lo - min(dx, 0) * travel, hi - max(dx, 0) * travel))
    y0 = float(rng.uniform(lo - min(dy, 0) * travel, hi - max(dy, 0) * travel))
    end = (x0 + dx * travel, y0 + dy * travel)
    return ShapeObject(
        shape=shape, colour=colour, motion=motion, size=round(radius, 3),
        speed=round(travel / (num_frames - 1), 3), start=(round(x0, 3), round(y0, 3)),
        end=(round(end[0], 3), round(end[1], 3)),
    )


def _paths_collide(a: ShapeObject, b: ShapeObject, steps: int = 16) -> bool:
    for f in np.linspace(0.0, 1.0, steps):
        ax = a.start[0] + f * (a.end[0] - a.start[0])
        ay = a.start[1] + f * (a.end[1] - a.start[1])
        bx = b.start[0] + f * (b.end[0] - b.start[0])
        by = b.start[1] + f * (b.end[1] - b.start[1])
        if np.hypot(ax - bx, ay - by) < (a.size + b.size) * 1.45 + 2:
            return True
    return False


def sample_objects(rng: np.random.Generator, cfg: WorldConfig, num_frames: int) -> list[ShapeObject]:
    if rng.random() >= cfg.two_object_prob:
        return [_sample_object(
            rng, cfg, num_frames, str(rng.choice(SHAPES)), str(rng.choice(COLOURS)), str(rng.choice(MOTIONS))
        )]
    shapes = rng.choice(SHAPES, size=2, replace=False)
    colours = rng.choice(COLOURS, size=2, replace=False)
    mover = int(rng.integers(0, 3))  # 0 or 1: that object moves; 2: both stay still
    motions = ["still", "still"]
    if mover < 2:
        motions[mover] = str(rng.choice(MOTIONS[:4]))
    for _ in range(100):
        objects = [
            _sample_object(rng, cfg, num_frames, str(shapes[i]), str(colours[i]), motions[i]) for i in range(2)
        ]
        if not _paths_collide(*objects):
            return objects
    # Crowded by bad luck: shrink to one object rather than overlap two.
    return objects[:1]


def _object_mask(shape: str, cx: float, cy: float, r: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    dx, dy = xx - cx, yy - cy  # (S, S)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r * 0.85
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # Triangle pointing up: apex at (cx, cy - r), base at cy + 0.8 r, half-width r at the base.
    top, base = cy - r, cy + 0.8 * r
    frac = (yy - top) / (base - top)  # (S, S): 0 at the apex, 1 at the base
    return (frac >= 0) & (frac <= 1) & (np.abs(dx) <= frac * r)


def render_frames(
    objects: list[ShapeObject], num_frames: int, cfg: WorldConfig, rng: np.random.Generator
) -> np.ndarray:
    """Objects -> uint8 frames `(T, S, S, 3)` on a dark, slightly noisy background."""
    s = cfg.size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5  # (S, S) pixel centres
    background = rng.integers(0, 40, size=3).astype(np.float32)  # (3,)
    tints = [np.clip(np.array(RGB[o.colour], np.float32) + rng.normal(0, 10, 3), 0, 255) for o in objects]
    frames = np.empty((num_frames, s, s, 3), dtype=np.uint8)
    for t in range(num_frames):
        f = t / (num_frames - 1)
        img = np.broadcast_to(background, (s, s, 3)) + rng.normal(0, 3, (s, s, 3))  # (S, S, 3)
        for obj, tint in zip(objects, tints, strict=True):
            cx = obj.start[0] + f * (obj.end[0] - obj.start[0])
            cy = obj.start[1] + f * (obj.end[1] - obj.start[1])
            img[_object_mask(obj.shape, cx, cy, obj.size, xx, yy)] = tint
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def sample_video(
    seed: int, split: SplitName, index: int, cfg: WorldConfig
) -> tuple[ShapesRecord, np.ndarray]:
    """Video `index` of `split`: its record and its frames `(T, S, S, 3)`."""
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    num_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    objects = sample_objects(rng, cfg, num_frames)
    video_id = f"shapes-{split}-{index:06d}"
    record = ShapesRecord(
        id=video_id, split=split, video=f"{split}/{video_id}.mp4", caption=video_caption(objects),
        num_frames=num_frames, fps=cfg.fps, width=cfg.size, height=cfg.size, objects=objects,
    )
    return record, render_frames(objects, num_frames, cfg, rng)


def generate_split(
    out_dir: Path, split: SplitName, count: int, seed: int, cfg: WorldConfig, progress: bool = True
) -> Path:
    """Write `count` MP4s under `out_dir/split/` and `out_dir/split.jsonl`; return the JSONL."""
    from model.video import write_mp4

    (out_dir / split).mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / f"{split}.jsonl"
    tmp = jsonl.with_suffix(".jsonl.tmp")
    with tmp.open("w") as fh:
        for index in tqdm(range(count), desc=f"shapes {split}", disable=not progress):
            record, frames = sample_video(seed, split, index, cfg)
            write_mp4(frames, out_dir / record.video, fps=cfg.fps)
            fh.write(record.model_dump_json() + "\n")
    tmp.replace(jsonl)
    return jsonl


def read_records(jsonl: Path) -> Iterator[ShapesRecord]:
    with Path(jsonl).open() as fh:
        for line in fh:
            if line.strip():
                yield ShapesRecord.model_validate_json(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video data shapes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000, help="training videos")
    parser.add_argument("--val", type=int, default=200, help="validation videos")
    parser.add_argument("--test", type=int, default=200, help="held-out test videos")
    parser.add_argument("--size", type=int, default=64, help="frame size in pixels (even)")
    parser.add_argument("--min-frames", type=int, default=8)
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--two-object-prob", type=float, default=0.3, help="share of two-object videos")
    parser.add_argument("--train-two-object-prob", type=float,
                        help="the train split's share (default: --two-object-prob); val and test keep "
                             "--two-object-prob, so held-out figures stay comparable")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.size % 2 or args.size < 32:
        parser.error("--size must be even and at least 32")
    if not 2 <= args.min_frames <= args.max_frames:
        parser.error("need 2 <= --min-frames <= --max-frames")
    cfg = WorldConfig(
        size=args.size, min_frames=args.min_frames, max_frames=args.max_frames,
        two_object_prob=args.two_object_prob,
    )
    train_two = args.two_object_prob if args.train_two_object_prob is None else args.train_two_object_prob
    for name, prob in (("--two-object-prob", args.two_object_prob), ("--train-two-object-prob", train_two)):
        if not 0.0 <= prob <= 1.0:
            parser.error(f"{name} must be between 0 and 1")
    train_cfg = dataclasses.replace(cfg, two_object_prob=train_two)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("val", args.val), ("test", args.test)):
        path = generate_split(args.out, split, count, args.seed, train_cfg if split == "train" else cfg,
                              progress=not args.no_progress)
        print(f"{split}: {count} videos -> {path}")
    world = {"seed": args.seed, **cfg.__dict__, "train_two_object_prob": train_two}
    (args.out / "world.json").write_text(json.dumps(world, indent=2))
    return 0
