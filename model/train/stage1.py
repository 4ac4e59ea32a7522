"""Stage 1: train the video abstractor on video-caption pairs, the LLM (and LoRA) frozen.

Each pair is a one-round dialogue ("Describe the video." + video -> caption); the loss
is on the caption tokens only. Writes a checkpoint in the server's format.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.train.common import TrainConfig, configure_threads, train_loop, write_log
from model.train.data import FeatureStore, FrameStore, all_videos, caption_dialogues
from model.train.modules import DialogueLoss
from model.train.stage0 import save_with_info

log = logging.getLogger(__name__)


def add_loop_arguments(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=batch)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup-steps", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"))
    parser.add_argument("--resume", action="store_true", help="continue from the saved training state")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")


def loop_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        warmup_steps=args.warmup_steps, eval_every=args.eval_every, save_every=args.save_every,
        seed=args.seed, mixed_precision=args.mixed_precision, progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to start from (stage 0)")
    parser.add_argument("--captions", type=Path, required=True, help="training captions (.jsonl or .csv)")
    parser.add_argument("--val-captions", type=Path, help="validation captions")
    parser.add_argument("--video-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    add_loop_arguments(parser, steps=400, batch=32, lr=1e-3)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    model = load_checkpoint(args.checkpoint)
    train = caption_dialogues(args.captions, args.video_dir, seed=args.seed)
    val = caption_dialogues(args.val_captions, args.video_dir, seed=args.seed) if args.val_captions else []
    frames = FrameStore(model.vision.cfg.num_frames, model.vision.cfg.image_size)
    features = FeatureStore(model, frames)
    features.preload(all_videos(train + val), progress=not args.no_progress)

    model.set_training_mode(train_abstractor=True, train_lora=False)
    cfg = loop_config(args)

    def save(module: DialogueLoss, step: int) -> None:
        save_with_info(module.model, args.out, "stage1", {"step": step})

    result = train_loop(cfg, DialogueLoss(model, features), train, val, save,
                        state_dir=args.out.parent / f"{args.out.name}.train-state", resume=args.resume,
                        desc="stage1 abstractor")
    report = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
              "val_loss": result.val_losses[-1][1], "train_wall_s": round(result.wall_s, 1),
              "wall_s": round(time.perf_counter() - started, 1)}
    save_with_info(model, args.out, "stage1", report)
    write_log(args.out / "training_log.jsonl", {"stage": "stage1", **report})
    print(json.dumps({"stage1": report}, indent=2))
    return 0
