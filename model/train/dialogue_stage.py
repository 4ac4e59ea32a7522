"""What stages 1 and 2 share: their loop options and the run of a dialogue-loss stage.

Both train on dialogues (`DialogueLoss`: next-token loss on assistant text, video tokens
from the abstractor); they differ in their data and in which parts train.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from model.network import GPT4VideoModel
from model.train.common import TrainConfig, add_run_arguments, configure_threads, train_loop, write_log
from model.train.data import DialogueItem, FeatureStore, FrameStore, all_videos
from model.train.modules import DialogueLoss
from model.train.stage0 import save_with_info


def add_loop_arguments(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=batch)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    add_run_arguments(parser)
    parser.add_argument("--train-vision", action="store_true",
                        help="also fine-tune the vision tower (for a tower pretrained by stage 0 here: the "
                             "dialogue loss teaches it what contrastive captions do not, e.g. which colour "
                             "belongs to which shape)")
    parser.add_argument("--vision-lr", type=float, help="learning rate of the vision tower (default: --lr)")
    parser.add_argument("--opening-tokens", type=int, default=0,
                        help="weight the first N tokens of each assistant turn (where it refuses, answers or "
                             "tags a video) by --opening-weight in the training loss (0: a plain mean)")
    parser.add_argument("--opening-weight", type=float, default=1.0)
    parser.add_argument("--loss-per-turn", action="store_true",
                        help="every assistant turn counts the same in the training loss (the mean of its "
                             "tokens), instead of every token: short answers about a video are not "
                             "outweighed by long chat answers")


def loop_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, eval_every=args.eval_every, save_every=args.save_every,
        seed=args.seed, mixed_precision=args.mixed_precision, progress=not args.no_progress,
    )


def begin_stage(args: argparse.Namespace) -> float:
    """Threads and seed from the options; the stage's start time."""
    configure_threads(args.threads)
    torch.manual_seed(args.seed)
    return time.perf_counter()


def run_dialogue_stage(
    stage: str,
    args: argparse.Namespace,
    model: GPT4VideoModel,
    train: Sequence[DialogueItem],
    val: Sequence[DialogueItem],
    started: float,
    report_extra: dict,
) -> dict:
    """Train `model` (its trainable parts already chosen) on `train`; write `args.out` + its log."""
    out: Path = args.out
    frames = FrameStore(model.vision.cfg.num_frames, model.vision.cfg.image_size)
    features = FeatureStore(model, frames)
    videos = all_videos([*train, *val])
    if model.vision.trainable:  # frame tokens are recomputed every step: decode only
        frames.preload(videos, progress=not args.no_progress)
    else:
        features.preload(videos, progress=not args.no_progress)

    def save(module: DialogueLoss, step: int) -> None:
        save_with_info(module.model, out, stage, {"step": step})

    module = DialogueLoss(model, features, args.vision_lr, args.opening_tokens, args.opening_weight,
                          args.loss_per_turn)
    result = train_loop(loop_config(args), module, train, val, save,
                        state_dir=out.parent / f"{out.name}.train-state", resume=args.resume,
                        desc=f"{stage} {'+'.join(model.trainable_parts())}")
    report = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
              "val_loss": result.val_losses[-1][1], **report_extra, "train_vision": args.train_vision,
              "opening_tokens": args.opening_tokens, "opening_weight": args.opening_weight,
              "loss_per_turn": args.loss_per_turn,
              "train_wall_s": round(result.wall_s, 1), "wall_s": round(time.perf_counter() - started, 1)}
    save_with_info(model, out, stage, report)
    write_log(out / "training_log.jsonl", {"stage": stage, **report})
    print(json.dumps({stage: report}, indent=2))
    return report
