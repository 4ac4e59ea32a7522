"""Stage 1: train the video abstractor on video-caption pairs, the LLM (and LoRA) frozen.

Each pair is a one-round dialogue ("Describe the video." + video -> caption); the loss
is on the caption tokens only. `--train-vision` also fine-tunes the vision tower (for a
tower pretrained here by stage 0, not a real CLIP). Writes a checkpoint in the server's
format.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.train.data import caption_dialogues
from model.train.dialogue_stage import add_loop_arguments, begin_stage, run_dialogue_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train stage1", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to start from (stage 0)")
    parser.add_argument("--captions", type=Path, required=True, help="training captions (.jsonl or .csv)")
    parser.add_argument("--val-captions", type=Path, help="validation captions")
    parser.add_argument("--video-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    add_loop_arguments(parser, steps=400, batch=32, lr=1e-3)
    args = parser.parse_args(argv)
    started = begin_stage(args)

    model = load_checkpoint(args.checkpoint)
    train = caption_dialogues(args.captions, args.video_dir, seed=args.seed)
    val = caption_dialogues(args.val_captions, args.video_dir, seed=args.seed) if args.val_captions else []
    model.set_training_mode(train_abstractor=True, train_lora=False, train_vision=args.train_vision)
    run_dialogue_stage("stage1", args, model, train, val, started, {})
    return 0
