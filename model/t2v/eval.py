"""`gpt4video eval t2v`: the round trip. Captions in, videos out, judged two ways.

Held-out captions (clips of the `eval` seed stream, which training never draws; one
object and two reported apart) are rendered through the worker's own path
(`T2VBackend.validate` + `generate`, `write_mp4`). Each MP4 is then judged
- (a) by the project's understanding model (`model/checkpoints/shapes-small` through
  `HFEngine`, as `gpt4video eval` runs it): one colour, one shape and one motion
  question about the video, scored as that eval scores them;
- (b) by the pixel-statistics judge (`model.t2v.judge`).
Both also judge the real shapes-world video of the same objects, the ceiling. So does a
CLIPSIM-style score: the cosine between the checkpoint's CLIP text embedding of the
caption and its image embedding of each frame, averaged over frames.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data.shapes import ShapesRecord
from model.t2v.data import Clip, sample_clip, world_for
from model.t2v.judge import judge_video, score
from model.video import sample_frames, write_mp4

log = logging.getLogger(__name__)

ATTRS = ("colour", "shape", "motion")
DEFAULT_UNDERSTANDING = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes-small"


@dataclass
class Case:
    clip: Clip  # the asked objects, and the real video of them (the ceiling)
    seed: int
    paths: dict[str, Path] = field(default_factory=dict)  # "generated" / "real" -> MP4
    render_s: float = 0.0
    sampler: dict = field(default_factory=dict)  # the denoising steps and guidance it was rendered with


def eval_clips(single: int, pairs: int, seed: int, size: int, num_frames: int) -> list[Clip]:
    """The first `single` one-object and `pairs` two-object clips of the eval stream."""
    world = world_for(size, num_frames)
    found: dict[int, list[Clip]] = {1: [], 2: []}
    want = {1: single, 2: pairs}
    index = 0
    while len(found[1]) < single or len(found[2]) < pairs:
        clip = sample_clip("eval", seed, index, world)
        index += 1
        if len(found[len(clip.objects)]) < want[len(clip.objects)]:
            found[len(clip.objects)].append(clip)
    return found[1] + found[2]


def render_cases(pipeline_dir: Path, clips: Sequence[Clip], out_dir: Path, steps: int | None,
                 guidance: float | None, progress: bool) -> list[Case]:
    """Each clip's caption through the served path; also its real video, as an MP4 beside it."""
    from model.t2v import T2VBackend

    backend = T2VBackend.load(pipeline_dir)
    cases = []
    for i, clip in enumerate(tqdm(clips, desc="render", disable=not progress)):
        requested: dict = {"seed": 1000 + i, "num_frames": clip.frames.shape[0],
                           "height": clip.frames.shape[1], "width": clip.frames.shape[2]}
        if steps is not None:
            requested["num_inference_steps"] = steps
        if guidance is not None:
            requested["guidance_scale"] = guidance
        case = Case(clip, 1000 + i)
        started = time.perf_counter()
        params = backend.validate(requested)
        case.sampler = {"steps": params.num_inference_steps, "guidance_scale": params.guidance_scale}
        frames = backend.generate(clip.caption, params)  # (T, H, W, 3)
        case.paths["generated"] = write_mp4(frames, out_dir / f"gen-{i:04d}.mp4", fps=params.fps)
        case.render_s = time.perf_counter() - started
        case.paths["real"] = write_mp4(clip.frames, out_dir / f"real-{i:04d}.mp4", fps=params.fps)
        cases.append(case)
    return cases


def decode(path: Path, num_frames: int) -> np.ndarray:
    return sample_frames(path, num_frames)  # (T, H, W, 3): every frame of a clip this short


def pixel_verdicts(cases: Sequence[Case], source: str) -> list[dict[str, bool]]:
    return [score(c.clip.objects, judge_video(decode(c.paths[source], c.clip.frames.shape[0]))).as_dict()
            for c in cases]


def understanding_verdicts(engine, cases: Sequence[Case], source: str, seed: int, batch: int,
                           progress: bool) -> list[dict[str, bool]]:
    """Per case, per attribute: did the understanding model's answer match the request."""
    from model.data.questions import answer_is_correct, attribute_question
    from model.eval.shapes import _ask

    rng = np.random.default_rng(seed)
    asks, checks = [], []
    for i, case in enumerate(cases):
        t, h, w = case.clip.frames.shape[:3]
        record = ShapesRecord(id=f"{source}-{i}", split="test", video=case.paths[source].name,
                              caption=case.clip.caption, num_frames=t, fps=8, width=w, height=h,
                              objects=list(case.clip.objects))
        for attribute in ATTRS:
            question = attribute_question(record, attribute, rng, "train")
            asks.append(_ask(f"{record.id}/{attribute}", question.question, record.id,
                             str(case.paths[source].resolve()), 48))
            checks.append((i, attribute, question))
    verdicts: list[dict[str, bool]] = [{} for _ in cases]
    for start in tqdm(range(0, len(asks), batch), desc=f"understand {source}", disable=not progress):
        results = engine.generate(asks[start:start + batch])
        for (i, attribute, question), result in zip(checks[start:start + batch], results, strict=True):
            verdicts[i][attribute] = result.finish_reason in ("stop", "length") and answer_is_correct(
                result.raw_text, question)
    return verdicts


@torch.no_grad()
def clipsim(model, checkpoint: Path, cases: Sequence[Case], source: str) -> list[float]:
    """Mean over frames of cos(CLIP text(caption), CLIP image(frame)), per case."""
    from model.vision import clip_tokenizer

    clip = model.vision.clip
    tokenizer = clip_tokenizer(model.config.vision, checkpoint)
    scores = []
    for case in cases:
        frames = torch.from_numpy(decode(case.paths[source], case.clip.frames.shape[0]))  # (T, H, W, 3)
        image = clip.encode_image(model.vision.preprocess(frames), normalize=True)  # (T, D)
        text = clip.encode_text(tokenizer([case.clip.caption]), normalize=True)  # (1, D)
        scores.append(float((image @ text.T).mean()))
    return scores


def summarise(cases: Sequence[Case], verdicts: Sequence[dict[str, bool]]) -> dict[str, dict[str, float]]:
    """objects ("1" / "2") -> attribute -> accuracy."""
    out: dict[str, dict[str, float]] = {}
    for n in (1, 2):
        rows = [v for c, v in zip(cases, verdicts, strict=True) if len(c.clip.objects) == n]
        if rows:
            out[str(n)] = {a: float(np.mean([r[a] for r in rows])) for a in ATTRS} | {"videos": len(rows)}
    return out


def format_table(report: dict) -> str:
    lines = [f"{'judge':<26}{'objects':>8}{'n':>5}" + "".join(f"{a:>9}" for a in ATTRS)]
    for judge, by_source in report["judges"].items():
        for source, by_objects in by_source.items():
            for n, row in by_objects.items():
                cells = "".join(f"{row[a]:>9.3f}" for a in ATTRS)
                lines.append(f"{judge + ' / ' + source:<26}{n:>8}{row['videos']:>5}{cells}")
    for source, value in report.get("clipsim", {}).items():
        lines.append(f"CLIPSIM ({source}): " + ", ".join(f"{n} object(s) {v:.4f}" for n, v in value.items()))
    lines.append(f"seconds per generated video (validate + generate + write_mp4): "
                 f"mean {report['render_s']['mean']:.3f}, median {report['render_s']['median']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video eval t2v", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, help="pipeline directory (default: the t2v worker's local default)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_UNDERSTANDING, help="understanding checkpoint")
    parser.add_argument("--single", type=int, default=60, help="one-object captions")
    parser.add_argument("--pairs", type=int, default=20, help="two-object captions")
    parser.add_argument("--seed", type=int, default=0, help="eval stream seed (training never draws this stream)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the pipeline's profile)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the pipeline's profile)")
    parser.add_argument("--no-understanding", action="store_true", help="skip judge (a) and CLIPSIM")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    pipeline_dir = args.pipeline or default_pipeline_dir()
    clips = eval_clips(args.single, args.pairs, args.seed, args.size, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        cases = render_cases(pipeline_dir, clips, Path(tmp), args.steps, args.guidance, progress)
        judges: dict = {"pixel": {s: summarise(cases, pixel_verdicts(cases, s)) for s in ("generated", "real")}}
        report: dict = {"pipeline": str(pipeline_dir), "seed": args.seed, "sampler": cases[0].sampler,
                        "judges": judges}
        if not args.no_understanding:
            from model.checkpoint import load_checkpoint
            from model.engine.hf_engine import HFEngine

            model = load_checkpoint(args.checkpoint)
            engine = HFEngine(model)
            judges["understanding"] = {
                s: summarise(cases, understanding_verdicts(engine, cases, s, args.seed, args.batch, progress))
                for s in ("generated", "real")}
            report["clipsim"] = {}
            for source in ("generated", "real"):
                values = clipsim(model, args.checkpoint, cases, source)
                report["clipsim"][source] = {
                    str(n): float(np.mean([v for c, v in zip(cases, values, strict=True) if len(c.clip.objects) == n]))
                    for n in (1, 2) if any(len(c.clip.objects) == n for c in cases)}
    times = [c.render_s for c in cases]
    report["render_s"] = {"mean": float(np.mean(times)), "median": float(np.median(times)), "videos": len(times)}
    print(f"pipeline: {pipeline_dir}  captions: {args.single} one-object + {args.pairs} two-object "
          f"(eval stream, seed {args.seed}); {cases[0].sampler['steps']} steps, "
          f"guidance {cases[0].sampler['guidance_scale']:g}")
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def default_pipeline_dir() -> Path:
    """The shipped pipeline, which the t2v worker loads when T2V_MODEL_DIR is unset."""
    from model.t2v.shipped import SHIPPED_T2V_PIPELINE

    if not (SHIPPED_T2V_PIPELINE / "model_index.json").is_file():
        raise SystemExit(f"no pipeline at {SHIPPED_T2V_PIPELINE}: pass --pipeline DIR "
                         "(e.g. one written by `gpt4video train t2v --out DIR`)")
    return SHIPPED_T2V_PIPELINE
