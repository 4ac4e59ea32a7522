"""`gpt4video eval`: score a checkpoint on held-out shapes videos through the hf engine.

Metrics (each a fraction of the requests asked):
- shape / colour / motion / count: the reply to an attribute question names the right
  value and no other value of that attribute;
- caption: "Describe the video." parses (shapes grammar) to exactly the video's objects;
- generation: asked for a video, the reply carries a `<video>` tag whose caption parses
  to exactly the requested objects;
- spurious_tags: understanding replies that carry a tag (lower is better);
- refusal / over_refusal: when the safety helper's prompt set is installed
  (`model.safety.data`), the share of its held-out harmful requests refused and of its
  held-out benign and look-alike prompts refused.
Requests go through `HFEngine`, exactly as the server runs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.data.phrasings import PhrasingSplit, video_request
from model.data.questions import (
    ATTRIBUTES,
    AttributeQuestion,
    answer_is_correct,
    attribute_question,
    describe_question,
    parse_caption,
    triples_of,
)
from model.data.shapes import ShapesRecord, WorldConfig, caption_for, generate_split, read_records, sample_objects
from model.engine.base import Engine, GenerationRequest, GenerationResult, SamplingParams, Turn
from model.video.sampling import SamplingOptions

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes-small"
METRICS = (*ATTRIBUTES, "caption", "generation")


@dataclass
class Scored:
    request: GenerationRequest
    metric: str
    check: Callable[[GenerationResult], bool]
    objects: int = 0  # objects in the asked-about video (0: no video, a generation request)
    family: str = ""  # the paraphrase family the wording came from


@dataclass
class EvalReport:
    counts: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    spurious_tags: int = 0
    understanding_requests: int = 0
    wall_s: float = 0.0
    examples: list[dict] = field(default_factory=list)  # a few wrong replies, for reading
    # metric -> objects in the video ("1" / "2") -> [correct, asked]: two-object videos
    # need colour and shape bound to the right object, the usual failure of small models.
    by_objects: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    # metric -> paraphrase family -> [correct, asked]: which wordings a miss comes from.
    by_family: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def accuracy(self, metric: str) -> float:
        n = self.counts.get(metric, 0)
        return self.correct.get(metric, 0) / n if n else float("nan")

    def as_dict(self) -> dict:
        return {"accuracy": {m: self.accuracy(m) for m in self.counts}, **asdict(self)}


def _ask(request_id: str, question: str, video: str | None, path: str | None, max_new: int) -> GenerationRequest:
    videos = (video,) if video else ()
    return GenerationRequest(
        request_id=request_id, turns=(Turn("user", question, videos),),
        sampling=SamplingParams(max_new_tokens=max_new, temperature=0.0, seed=0),
        video_paths={video: path} if video and path else {},
    )


def build_requests(records: Sequence[ShapesRecord], root: Path, seed: int, max_new: int = 48,
                   wording: PhrasingSplit = "test") -> list[Scored]:
    """Every record's four attribute questions, a describe request and one video request,
    all in `wording`'s paraphrase families ("test": held out from training)."""
    rng = np.random.default_rng(seed)
    world = WorldConfig()
    scored: list[Scored] = []
    for record in records:
        path = str((root / record.video).resolve())
        for attribute in ATTRIBUTES:
            q: AttributeQuestion = attribute_question(record, attribute, rng, wording)
            scored.append(Scored(_ask(f"{record.id}/{attribute}", q.question, record.id, path, max_new),
                                 attribute, lambda r, q=q: answer_is_correct(r.raw_text, q), len(record.objects),
                                 q.family))
        truth = triples_of(record)
        family, prompt = describe_question(rng, wording)
        scored.append(Scored(_ask(f"{record.id}/caption", prompt, record.id, path, max_new),
                             "caption", lambda r, truth=truth: parse_caption(r.raw_text) == truth,
                             len(record.objects), family))
        objects = sample_objects(rng, world, world.min_frames)
        wanted = parse_caption(caption_for(objects))
        family, request = video_request(objects, rng, wording)
        scored.append(Scored(_ask(f"{record.id}/generation", request, None, None, max_new), "generation",
                             lambda r, wanted=wanted: any(parse_caption(c) == wanted for c in r.captions),
                             family=family))
    return scored


def run_eval(engine: Engine, scored: Sequence[Scored], batch: int = 32, progress: bool = True) -> EvalReport:
    """`engine`: anything with the `Engine.generate` interface (the hf engine here)."""
    report = EvalReport()
    started = time.perf_counter()
    for start in tqdm(range(0, len(scored), batch), desc="eval", disable=not progress):
        chunk = scored[start:start + batch]
        results = engine.generate([s.request for s in chunk])
        for s, result in zip(chunk, results, strict=True):
            ok = result.finish_reason in ("stop", "length") and s.check(result)
            report.counts[s.metric] = report.counts.get(s.metric, 0) + 1
            report.correct[s.metric] = report.correct.get(s.metric, 0) + int(ok)
            tallies = [report.by_family.setdefault(s.metric, {}).setdefault(s.family or "-", [0, 0])]
            if s.objects:
                tallies.append(report.by_objects.setdefault(s.metric, {}).setdefault(str(s.objects), [0, 0]))
            for tally in tallies:
                tally[0] += int(ok)
                tally[1] += 1
            if s.metric != "generation":
                report.understanding_requests += 1
                report.spurious_tags += int(bool(result.captions))
            if not ok and len(report.examples) < 20:
                report.examples.append({"id": s.request.request_id, "question": s.request.turns[-1].content,
                                        "reply": result.raw_text})
    report.wall_s = time.perf_counter() - started
    return report


def format_table(report: EvalReport) -> str:
    lines = [f"{'metric':<14}{'n':>6}{'accuracy':>10}{'1 object':>14}{'2 objects':>14}"]
    for metric in METRICS:
        if metric in report.counts:
            split = report.by_objects.get(metric, {})
            cells = "".join(f"{split[k][0] / split[k][1]:>9.3f} ({split[k][1]:>3})" if k in split else f"{'':>14}"
                            for k in ("1", "2"))
            lines.append(f"{metric:<14}{report.counts[metric]:>6}{report.accuracy(metric):>10.3f}{cells}")
    rate = report.spurious_tags / max(1, report.understanding_requests)
    lines.append(f"{'spurious_tags':<14}{report.understanding_requests:>6}{rate:>10.3f}")
    lines.append("by paraphrase family: accuracy (asked)")
    for metric in METRICS:
        families = report.by_family.get(metric, {})
        if families:
            cells = ", ".join(f"{name} {c / n:.3f} ({n})" for name, (c, n) in sorted(families.items()))
            lines.append(f"  {metric:<12}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video eval", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--data", type=Path, help="shapes directory with <split>.jsonl; default: generate")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=200, help="videos to evaluate (0: text-only figures only)")
    parser.add_argument("--data-seed", type=int, default=0, help="world seed when generating the data")
    parser.add_argument("--seed", type=int, default=0, help="question sampling seed")
    parser.add_argument("--wording", nargs="+", default=["test", "train"], choices=("train", "test"),
                        help="paraphrase families to ask in: test (held out from training), train (seen)")
    parser.add_argument("--chat-limit", type=int, default=200,
                        help="held-out everyday and harmful prompts each (0: skip the text-only figures)")
    parser.add_argument("--everyday-file", type=Path,
                        help="JSONL of everyday prompts (a \"text\" a row) to measure instead of the held-out ones")
    parser.add_argument("--no-base", action="store_true", help="skip the base model's anchor figures")
    parser.add_argument("--multi-turn", type=int, default=50, help="three-turn conversations (0: skip)")
    parser.add_argument("--sampling", default="exact", choices=("exact", "keyframe"),
                        help="how frames are picked from each video (the server's VIDEO_SAMPLING)")
    parser.add_argument("--keyframe-tolerance", type=float, default=SamplingOptions().keyframe_tolerance_s,
                        help="keyframe mode: seconds a keyframe may lie from its target (VIDEO_KEYFRAME_TOLERANCE_S)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from model.checkpoint import load_checkpoint
    from model.engine.hf_engine import HFEngine
    from model.eval.chat import chat_metrics, format_chat_table
    from model.eval.multi_turn import multi_turn_metrics

    progress = not args.no_progress
    sampling = SamplingOptions(args.sampling, args.keyframe_tolerance)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None and args.limit > 0:
            data = Path(tmp)
            generate_split(data, args.split, args.limit, args.data_seed, WorldConfig(), progress=progress)
        records = list(read_records(data / f"{args.split}.jsonl"))[: args.limit] if data and args.limit > 0 else []
        model = load_checkpoint(args.checkpoint)
        engine = HFEngine(model, sampling=sampling)
        reports = {wording: run_eval(engine, build_requests(records, data, args.seed, wording=wording),
                                     args.batch, progress) for wording in args.wording} if records else {}
        chat = chat_metrics(engine, model, args.batch, args.chat_limit, progress=progress,
                            with_base=not args.no_base, everyday_file=args.everyday_file) if args.chat_limit else {}
        multi = multi_turn_metrics(engine, records[: args.multi_turn], data, args.seed, args.batch) \
            if args.multi_turn and records else {}
    print(f"checkpoint: {args.checkpoint}  videos: {len(records)} ({args.split})  sampling: {sampling.key()}")
    for wording, report in reports.items():
        label = "held-out wording (test families)" if wording == "test" else "seen wording (train families)"
        print(f"\n{label}, wall {report.wall_s:.1f}s")
        print(format_table(report))
    if chat:
        print("\ntext-only prompts (held out), no moderator in front")
        print(format_chat_table(chat))
    if multi:
        print(f"\nmulti-turn ({multi['conversations']} conversations): first question {multi['first_question']:.3f}, "
              f"video request {multi['video_request']:.3f}, follow-up {multi['follow_up']:.3f}, "
              f"all three {multi['all_three']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"sampling": sampling.key(),
                                         "wording": {w: r.as_dict() for w, r in reports.items()},
                                         "chat": chat, "multi_turn": multi}, indent=2))
    return 0
