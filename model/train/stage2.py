"""Stage 2: train the LoRA (and optionally the abstractor) on instruction dialogues.

Dialogues come from `gpt4video data instructions` (multi-round, multi-video,
generation with tagged captions, refusals); the loss is on assistant text only. Writes
a checkpoint in the server's format; the LoRA stays a plain PEFT adapter.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from model.checkpoint import load_checkpoint
from model.train.common import configure_threads, train_loop, write_log
from model.train.data import FeatureStore, FrameStore, all_videos, load_dialogues
from model.train.modules import DialogueLoss
from model.train.stage0 import save_with_info
from model.train.stage1 import add_loop_arguments, loop_config

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train stage2", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to start from (stage 1)")
    parser.add_argument("--instructions", type=Path, required=True, help="training dialogues (.jsonl)")
    parser.add_argument("--val-instructions", type=Path, help="validation dialogues (.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--train-abstractor", action="store_true", help="also train the abstractor")
    add_loop_arguments(parser, steps=600, batch=16, lr=1e-3)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    model = load_checkpoint(args.checkpoint, trainable_lora=True)
    train = load_dialogues(args.instructions)
    val = load_dialogues(args.val_instructions) if args.val_instructions else []
    frames = FrameStore(model.vision.cfg.num_frames, model.vision.cfg.image_size)
    features = FeatureStore(model, frames)
    features.preload(all_videos(train + val), progress=not args.no_progress)

    model.set_training_mode(train_abstractor=args.train_abstractor, train_lora=True)
    cfg = loop_config(args)

    def save(module: DialogueLoss, step: int) -> None:
        save_with_info(module.model, args.out, "stage2", {"step": step})

    result = train_loop(cfg, DialogueLoss(model, features), train, val, save,
                        state_dir=args.out.parent / f"{args.out.name}.train-state", resume=args.resume,
                        desc="stage2 lora")
    report = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
              "val_loss": result.val_losses[-1][1], "train_abstractor": args.train_abstractor,
              "train_wall_s": round(result.wall_s, 1), "wall_s": round(time.perf_counter() - started, 1)}
    save_with_info(model, args.out, "stage2", report)
    write_log(args.out / "training_log.jsonl", {"stage": "stage2", **report})
    print(json.dumps({"stage2": report}, indent=2))
    return 0
