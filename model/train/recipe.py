"""`gpt4video train shapes-default`: rebuild the shipped local default checkpoint end to end, the paper's way.

The base LLM is a pretrained instruct model (SmolLM2-135M-Instruct, `model.bases`),
kept frozen; the model learns video through the abstractor and a LoRA:

data shapes -> data instructions (paraphrase families, refusals) -> data binding ->
vision tower (stage 0 contrastive, or `--vision-from` a checkpoint's tower) -> train
init (fresh abstractor + no-op LoRA on the base) -> data chat (everyday prompts answered
by the frozen base) -> stage 1 (abstractor on captions) -> stage 2 (LoRA r16 q/v +
abstractor on dialogues, chat and refusals mixed in) -> eval. Each step is the command a
user would run (its `main(argv)`); the final checkpoint (no training state, no base
weights) is copied to `model/checkpoints/shapes-small/`. `--scale` trains longer;
`--continue-from CKPT` rebuilds the data and runs stage 2 on from a trained checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from model.bases import DEFAULT_BASE
from model.data import binding, chat, instructions, shapes
from model.eval import shapes as shapes_eval
from model.train import init, stage0, stage1, stage2

log = logging.getLogger(__name__)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes-small"

# The small vision tower stage 0 pretrains where no CLIP weights can be had
# (model.tiny.TinySizes fields; the LLM sizes only shape stage 0's throwaway LLM).
VISION_SIZES = {
    "image_size": 64, "patch_size": 8, "vision_width": 96, "vision_layers": 3, "clip_embed_dim": 96,
    "text_width": 64, "text_layers": 2, "num_frames": 8,
}
# Understanding dialogues of 1-3 rounds: every sequence runs through 30 frozen layers.
BUILDER_CONFIG = {"min_rounds": 1, "max_rounds": 3}


def _run(name: str, fn: Callable[[list[str]], int], argv: list[str], timings: dict[str, float]) -> None:
    print(f"\n== {name}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = fn(argv)
    timings[name] = round(time.perf_counter() - started, 1)
    if code != 0:
        raise SystemExit(f"{name} failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train shapes-default", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("data/shapes-default"), help="data + stage outputs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the final checkpoint goes")
    parser.add_argument("--base", default=DEFAULT_BASE, help="named base LLM (gpt4video build-base)")
    parser.add_argument("--vision-from", type=Path,
                        help="take this checkpoint's vision tower instead of pretraining one in stage 0")
    parser.add_argument("--continue-from", type=Path,
                        help="a trained checkpoint on the same base: skip stage 0, init and stage 1, and run "
                             "stage 2 on from its abstractor and LoRA (the data is rebuilt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-videos", type=int, default=2100)
    parser.add_argument("--val-videos", type=int, default=100)
    parser.add_argument("--test-videos", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (1: robust on a shared CPU; 0: torch's choice)")
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"),
                        help="auto: bf16 autocast where the hardware computes it (GPUs, CPUs with AVX512-BF16/AMX: "
                             "25%% faster a step there), else fp32 (bf16 is emulated on AVX2-only CPUs, ~30x slower)")
    parser.add_argument("--train-two-object-prob", type=float, default=0.5,
                        help="share of two-object videos in the train split (val/test keep 0.3)")
    parser.add_argument("--binding-per-video", type=int, default=1,
                        help="shape-by-colour / colour-by-shape dialogues per two-object train video")
    parser.add_argument("--chat-prompts", type=int, default=1000, help="everyday prompts answered by the base")
    parser.add_argument("--multi-video-groups", type=int, default=300, help="cap on multi-video dialogues")
    parser.add_argument("--stage1-steps", type=int, default=500)
    parser.add_argument("--stage2-steps", type=int, default=550)
    parser.add_argument("--stage2-lr", type=float, default=1e-3)
    parser.add_argument("--stage2-opening-tokens", type=int, default=0,
                        help="stage 2 weights the first N tokens of each assistant turn (0: a plain mean)")
    parser.add_argument("--stage2-opening-weight", type=float, default=1.0)
    parser.add_argument("--stage2-loss-per-turn", action="store_true",
                        help="stage 2's loss: every assistant turn counts the same (train stage2 --loss-per-turn)")
    parser.add_argument("--chat-repeat", type=int, default=1,
                        help="times the chat dialogues appear in stage 2's data (their sampling weight)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-chat-limit", type=int, default=200,
                        help="held-out everyday and harmful prompts the final eval asks")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    work: Path = args.work
    data = work / "shapes"
    no_progress = ["--no-progress"] if args.no_progress else []
    quiet = no_progress + (["--threads", str(args.threads)] if args.threads else [])
    loop = ["--batch-size", str(args.batch_size), "--mixed-precision", args.mixed_precision, "--eval-every", "100",
            "--save-every", "100", "--seed", str(args.seed), *quiet]
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def steps(n: int) -> str:
        return str(max(1, round(n * args.scale)))

    _run("data shapes", shapes.main, [
        "--out", str(data), "--seed", str(args.seed), "--train", str(args.train_videos),
        "--val", str(args.val_videos), "--test", str(args.test_videos),
        "--train-two-object-prob", str(args.train_two_object_prob), *no_progress], timings)
    work.mkdir(parents=True, exist_ok=True)
    (work / "builder.json").write_text(json.dumps(BUILDER_CONFIG))
    for split in ("train", "val"):
        _run(f"data instructions {split}", instructions.main, [
            "--captions", str(data / f"{split}.jsonl"), "--out", str(work / f"instructions-{split}.jsonl"),
            "--seed", str(args.seed + (split == "val")), "--config", str(work / "builder.json"),
            "--multi-video-max-groups", str(args.multi_video_groups),
            # Refusal dialogues come from the safety prompt set's train split: train only.
            *(["--no-refusals"] if split == "val" else [])], timings)
    extra_files: list[str] = []
    if args.binding_per_video:
        extra_files.append(str(work / "binding-train.jsonl"))
        _run("data binding", binding.main, [
            "--captions", str(data / "train.jsonl"), "--out", extra_files[-1],
            "--per-video", str(args.binding_per_video), "--seed", str(args.seed + 200)], timings)

    vision_from = args.vision_from
    if args.continue_from is not None:
        start = args.continue_from
    elif vision_from is None:  # no pretrained tower: stage 0 pretrains the small one (vision only)
        vision_from = work / "stage0"
        _run("train stage0 vision", stage0.main, [
            "--captions", str(data / "train.jsonl"), "--val-captions", str(data / "val.jsonl"),
            "--out", str(vision_from), "--seed", str(args.seed), "--vision-steps", steps(800),
            "--vision-batch", "48", "--llm-steps", "0",
            *[f"--size={k}={v}" for k, v in VISION_SIZES.items()], *quiet], timings)
    if args.continue_from is None:
        start = work / "init"
        _run("train init", init.main, [
            "--vision-from", str(vision_from), "--out", str(start), "--base", args.base,
            "--seed", str(args.seed)], timings)
    if args.chat_prompts:  # the base answers with the adapter disabled: any checkpoint on it will do
        chat_file = str(work / "chat-train.jsonl")
        extra_files += [chat_file] * max(1, args.chat_repeat)
        _run("data chat", chat.main, [
            "--checkpoint", str(start), "--out", chat_file, "--split", "train",
            "--limit", str(args.chat_prompts), "--max-new-tokens", "80", *quiet], timings)
    earlier_logs: list[str] = []
    if args.continue_from is None:
        _run("train stage1", stage1.main, [
            "--checkpoint", str(start), "--captions", str(data / "train.jsonl"),
            "--val-captions", str(data / "val.jsonl"), "--out", str(work / "stage1"),
            "--steps", steps(args.stage1_steps), "--lr", "1e-3", *loop], timings)
        start = work / "stage1"
    else:
        log_file = args.continue_from / "training_log.jsonl"
        earlier_logs = log_file.read_text().splitlines() if log_file.is_file() else []
    _run("train stage2", stage2.main, [
        "--checkpoint", str(start), "--instructions", str(work / "instructions-train.jsonl"),
        *extra_files, "--val-instructions", str(work / "instructions-val.jsonl"), "--out", str(work / "stage2"),
        "--train-abstractor", "--steps", steps(args.stage2_steps), "--lr", str(args.stage2_lr),
        "--opening-tokens", str(args.stage2_opening_tokens), "--opening-weight", str(args.stage2_opening_weight),
        *(["--loss-per-turn"] if args.stage2_loss_per_turn else []), *loop], timings)

    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(work / "stage2", args.out)
    if args.continue_from is not None:
        stages: tuple[str, ...] = ("stage2",)
    else:
        stages = ("stage1", "stage2") if args.vision_from else ("stage0", "stage1", "stage2")
    logs = [json.loads(line) for line in earlier_logs if line.strip()]
    logs += [json.loads(line) for s in stages
             for line in (work / s / "training_log.jsonl").read_text().splitlines() if line.strip()]
    train_wall = round(time.perf_counter() - started, 1)
    (args.out / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logs))

    _run("eval", shapes_eval.main, [
        "--checkpoint", str(args.out), "--data", str(data), "--split", "test",
        "--json", str(args.out / "eval.json"), "--chat-limit", str(args.eval_chat_limit), *quiet], timings)
    summary = {"timings_s": timings, "train_wall_s": train_wall,
               "total_wall_s": round(time.perf_counter() - started, 1)}
    (args.out / "recipe.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0
