"""Stage 2: train the LoRA (and optionally the abstractor) on instruction dialogues.

Dialogues come from `gpt4video data instructions` (multi-round, multi-video,
generation with tagged captions, refusals); the loss is on assistant text only. Writes
a checkpoint in the server's format; the LoRA stays a plain PEFT adapter.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.train.data import load_dialogues
from model.train.dialogue_stage import add_loop_arguments, begin_stage, run_dialogue_stage

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train stage2", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint to start from (stage 1)")
    parser.add_argument("--instructions", type=Path, nargs="+", required=True,
                        help="training dialogues (.jsonl; several files are read in order)")
    parser.add_argument("--val-instructions", type=Path, help="validation dialogues (.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--train-abstractor", action="store_true", help="also train the abstractor")
    add_loop_arguments(parser, steps=600, batch=16, lr=1e-3)
    args = parser.parse_args(argv)
    started = begin_stage(args)

    model = load_checkpoint(args.checkpoint, trainable_lora=True)
    train = [item for path in args.instructions for item in load_dialogues(path)]
    val = load_dialogues(args.val_instructions) if args.val_instructions else []
    model.set_training_mode(train_abstractor=args.train_abstractor, train_lora=True,
                            train_vision=args.train_vision)
    run_dialogue_stage("stage2", args, model, train, val, started, {"train_abstractor": args.train_abstractor})
    return 0
