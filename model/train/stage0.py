"""Stage 0 (only where no pretrained weights exist): pretrain the small vision tower and LLM.

1. Build a fresh small checkpoint (`model.tiny`) whose BPE tokenizer is trained on the
   corpus, or start from `--checkpoint`.
2. Vision: open_clip's contrastive loss (`open_clip.loss.ClipLoss`) between single frames
   and their frame-level captions (for the shapes world: the objects without their motion,
   which one frame cannot show), training the image and text towers together.
3. LLM: the base LLaMA (LoRA bypassed) on the corpus as text-only dialogues: each
   instruction dialogue with its videos written in as their captions, and each caption
   as "[caption] Describe the video." -> caption; loss on assistant text only, so the
   LLM learns to answer from what it is shown, never to guess what only a video shows.
   The LoRA is reset to a no-op after.
Writes a checkpoint in the server's format (random abstractor, no-op LoRA).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from model.abstractor import VideoAbstractor
from model.checkpoint import load_checkpoint, save_checkpoint
from model.data.instructions import read_caption_items, read_conversations
from model.data.questions import DESCRIBE_PROMPTS
from model.data.schema import Conversation
from model.data.text_dialogues import shown_as_text
from model.engine.base import Turn
from model.llm import LoRASettings
from model.network import GPT4VideoModel
from model.prompt import PromptConfig
from model.tiny import TinySizes, build_tiny_checkpoint
from model.train.common import TrainConfig, configure_threads, train_loop, write_log
from model.train.data import FrameStore
from model.train.modules import ClipContrastive, FrameTextGroup, GroundedTextLoss

log = logging.getLogger(__name__)


def frame_text_groups(captions: Path, num_frames: int, video_dir: Path | None = None) -> list[FrameTextGroup]:
    """Frames grouped by the caption a single frame can show.

    Shapes world: each sampled frame is described by its objects and where they are (a
    frame cannot show motion, but positions over frames are what motion is made of).
    Other data: any frame of a video with the video's caption.
    """
    captions = Path(captions)
    groups: dict[str, list[tuple[str, int]]] = {}
    for item in read_caption_items(captions, captions.parent, video_dir):
        path = str((captions.parent / item.video).resolve())
        if item.record is None:
            groups.setdefault(item.caption, []).append((path, -1))
            continue
        for k in range(num_frames):
            groups.setdefault(item.record.frame_caption(k, num_frames), []).append((path, k))
    return [FrameTextGroup(text, tuple(frames)) for text, frames in groups.items()]


def conversation_turns(conv: Conversation, root: Path, captions: Mapping[str, str]) -> tuple[Turn, ...]:
    """A dialogue as the stage-0 LLM reads it, each video replaced by its caption in brackets.

    With the caption where the video tokens will be, the LLM learns to answer from what
    it was shown; stage 1 then only has to make the abstractor's tokens say the caption.
    """
    paths = [str((root / v).resolve()) for v in conv.videos]
    turns = []
    for m in conv.messages:
        shown = "".join(shown_as_text(captions.get(paths[i], "a video")) for i in m.videos)
        turns.append(Turn(m.role, shown + m.content))
    return tuple(turns)


def caption_turns(caption: str, prompt: str) -> tuple[Turn, ...]:
    return (Turn("user", shown_as_text(caption) + prompt), Turn("assistant", caption))


def grounded_dialogues(
    captions: Path, instructions: Sequence[Path], video_dir: Path | None = None
) -> list[tuple[Turn, ...]]:
    """Stage 0's LLM corpus: every caption as a describe dialogue, and every instruction dialogue."""
    items = read_caption_items(captions, captions.parent, video_dir)
    dialogues = [caption_turns(it.caption, DESCRIBE_PROMPTS[i % len(DESCRIBE_PROMPTS)]) for i, it in enumerate(items)]
    shown = {str((captions.parent / it.video).resolve()): it.caption for it in items}  # video path -> caption
    for path in instructions:
        dialogues.extend(conversation_turns(c, path.parent, shown) for c in read_conversations(path))
    return dialogues


def corpus_texts(captions: Path, instructions: Sequence[Path], video_dir: Path | None = None) -> list[str]:
    """The LLM's pretraining text: every caption, and every instruction dialogue (rendered later)."""
    texts = [it.caption for it in read_caption_items(Path(captions), Path(captions).parent, video_dir)]
    for path in instructions:
        for conv in read_conversations(path):
            texts.extend(m.content for m in conv.messages)
    return texts


def parse_sizes(pairs: Sequence[str]) -> TinySizes:
    fields = {f.name: f.type for f in dataclasses.fields(TinySizes)}
    values: dict[str, int] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"--size {key}: unknown; choose from {sorted(fields)}")
        values[key] = int(value)
    return TinySizes(**values)


LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_targets(value: str) -> list[str]:
    targets = [t.strip() for t in value.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(LLAMA_PROJECTIONS))
    if not targets or unknown:
        raise SystemExit(f"--lora-targets {value!r}: choose from {', '.join(LLAMA_PROJECTIONS)}")
    return targets


def set_abstractor_memory(model: GPT4VideoModel, memory: str) -> None:
    """Switch the memory layout; shared weights are kept ("full_delta" adds a fresh change
    projection)."""
    cfg = dataclasses.replace(model.abstractor.cfg, memory=memory)
    rebuilt = VideoAbstractor(cfg).to(model.device)
    rebuilt.load_state_dict(model.abstractor.state_dict(), strict=False)
    model.abstractor = rebuilt
    model.config = dataclasses.replace(model.config, abstractor=cfg)  # type: ignore[attr-defined]


def reset_lora(model: GPT4VideoModel) -> None:
    """Make the adapter a no-op again (B = 0), as PEFT initialises a fresh LoRA."""
    with torch.no_grad():
        for name, param in model.llm.named_parameters():
            if "lora_B" in name:
                param.zero_()


def save_with_info(model: GPT4VideoModel, out: Path, stage: str, extra: dict) -> None:
    config = model.config  # type: ignore[attr-defined]
    info = {**config.info, "trained": True, f"{stage}": extra}
    save_checkpoint(model, out, dataclasses.replace(config, info=info))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train stage0", description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=Path, required=True, help="training captions (.jsonl or .csv)")
    parser.add_argument("--val-captions", type=Path, help="validation captions")
    parser.add_argument("--instructions", type=Path, nargs="*", default=[], help="dialogues for the LLM text")
    parser.add_argument("--video-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--checkpoint", type=Path, help="start from this checkpoint instead of a fresh one")
    parser.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                        help="fresh checkpoint sizes (model.tiny.TinySizes fields)")
    parser.add_argument("--system-prompt", help="fresh checkpoint: default system prompt (else the stock one)")
    parser.add_argument("--lora-targets", default=",".join(LoRASettings().target_modules),
                        help="fresh checkpoint: comma-separated LLaMA projections the LoRA wraps "
                             "(e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj)")
    parser.add_argument("--abstractor-memory", choices=("factorized", "full", "full_delta"),
                        default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vision-steps", type=int, default=400,
                        help="contrastive steps for the vision tower (0: keep the tower, e.g. with --checkpoint)")
    parser.add_argument("--vision-batch", type=int, default=32)
    parser.add_argument("--vision-lr", type=float, default=1e-3)
    parser.add_argument("--llm-steps", type=int, default=300,
                        help="LLM steps from scratch (0: vision only, for a checkpoint on a pretrained base)")
    parser.add_argument("--llm-batch", type=int, default=32)
    parser.add_argument("--llm-lr", type=float, default=2e-3)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue from the saved training state")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    texts = corpus_texts(args.captions, args.instructions, args.video_dir)
    if args.checkpoint is None and not (args.resume and (args.out / "gpt4video.json").is_file()):
        prompt = PromptConfig(system=args.system_prompt) if args.system_prompt else PromptConfig()
        build_tiny_checkpoint(args.out, seed=args.seed, tokenizer_corpus=texts, sizes=parse_sizes(args.size),
                              prompt=prompt, lora_targets=lora_targets(args.lora_targets))
    model = load_checkpoint(args.checkpoint or args.out)
    set_abstractor_memory(model, args.abstractor_memory)
    reset_lora(model)
    state_root = args.out.parent / f"{args.out.name}.train-state"
    progress = not args.no_progress
    report: dict = {}

    # -- vision tower -------------------------------------------------------------------
    if args.vision_steps > 0:
        frames = FrameStore(model.vision.cfg.num_frames, model.vision.cfg.image_size)
        n = model.vision.cfg.num_frames
        train_groups = frame_text_groups(args.captions, n, args.video_dir)
        val_groups = frame_text_groups(args.val_captions, n, args.video_dir) if args.val_captions else []
        frames.preload([v for g in train_groups + val_groups for v, _ in g.frames], progress)
        batch = min(args.vision_batch, len(train_groups))
        model.vision.trainable = True
        model.vision.clip.requires_grad_(True)
        model.vision.clip.train()
        context = int(model.vision.clip.context_length if hasattr(model.vision.clip, "context_length") else 32)
        vision_cfg = TrainConfig(steps=args.vision_steps, batch_size=batch, grad_accum=args.grad_accum,
                                 lr=args.vision_lr, warmup_steps=min(50, args.vision_steps // 10),
                                 eval_every=args.eval_every, seed=args.seed, progress=progress,
                                 weight_decay=0.05)
        contrastive = ClipContrastive(model, frames, context, seed=args.seed)
        result = train_loop(vision_cfg, contrastive, train_groups, val_groups,
                            save=lambda m, step: None, state_dir=state_root / "vision", resume=args.resume,
                            desc="stage0 vision")
        model.vision.freeze()
        report["vision"] = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
                            "val_loss": result.val_losses[-1][1], "wall_s": round(result.wall_s, 1)}
    else:  # continuing from --checkpoint: the tower is kept as it is
        report["vision"] = {"steps": 0}

    # -- LLM on the corpus text -------------------------------------------------------------
    if args.llm_steps > 0:  # 0: a vision-only run (the LLM is a pretrained base elsewhere)
        llm_dialogues = grounded_dialogues(args.captions, args.instructions, args.video_dir)
        val_dialogues = grounded_dialogues(args.val_captions, [], args.video_dir) if args.val_captions else []
        model.llm.requires_grad_(False)
        for name, param in model.llm.named_parameters():
            if "lora_" not in name:
                param.requires_grad_(True)
        llm_cfg = TrainConfig(steps=args.llm_steps, batch_size=min(args.llm_batch, len(llm_dialogues)),
                              grad_accum=args.grad_accum, lr=args.llm_lr,
                              warmup_steps=min(50, args.llm_steps // 10), eval_every=args.eval_every,
                              seed=args.seed, progress=progress, weight_decay=0.01)
        result = train_loop(llm_cfg, GroundedTextLoss(model), llm_dialogues, val_dialogues, save=lambda m, step: None,
                            state_dir=state_root / "llm", resume=args.resume, desc="stage0 llm")
        model.llm.requires_grad_(False)
        reset_lora(model)
        report["llm"] = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
                         "val_loss": result.val_losses[-1][1], "wall_s": round(result.wall_s, 1)}

    report["wall_s"] = round(time.perf_counter() - started, 1)
    save_with_info(model, args.out, "stage0", report)
    write_log(args.out / "training_log.jsonl", {"stage": "stage0", **report})
    print(json.dumps({"stage0": report}, indent=2))
    return 0
