"""`gpt4video train init`: a fresh checkpoint on a pretrained base LLM, the paper's starting point.

The base (a named registry base, `model.bases`) stays frozen and is not stored in the
checkpoint; the vision tower is taken from an existing checkpoint (a real CLIP, or the
small tower stage 0 pretrains here); the abstractor is new, sized to the base's width,
and the LoRA is a fresh no-op PEFT adapter (B = 0). Stage 1 then trains the abstractor,
stage 2 the LoRA and the abstractor.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
from pathlib import Path

import torch

from model.abstractor import AbstractorConfig, VideoAbstractor
from model.bases import DEFAULT_BASE, base_spec, resolve_base
from model.checkpoint import CheckpointConfig, read_vision_config, save_checkpoint
from model.llm import LLMConfig, LoRASettings, attach_new_lora, load_base_llm
from model.network import GPT4VideoModel
from model.prompt import PromptConfig
from model.vision import FrameEncoder, create_clip

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AbstractorSizes:
    """The abstractor of the CPU default: small, since it is trained on 2 cores; 8 + 8 tokens."""

    width: int = 96
    layers: int = 2
    heads: int = 4
    num_temporal_queries: int = 8
    num_spatial_queries: int = 8
    memory: str = "full_delta"  # change tokens carry motion direction (model.abstractor)


def init_checkpoint(
    out: Path,
    vision_from: Path,
    base: str = DEFAULT_BASE,
    sizes: AbstractorSizes = AbstractorSizes(),
    lora: LoRASettings = LoRASettings(),
    prompt: PromptConfig = PromptConfig(),
    seed: int = 0,
    bases_dir: Path | None = None,
) -> Path:
    torch.manual_seed(seed)
    vision_cfg = read_vision_config(vision_from)
    clip = create_clip(vision_cfg, vision_from)
    vision = FrameEncoder(clip, vision_cfg)

    base_dir = resolve_base(base, bases_dir=bases_dir)
    llm, tokenizer = load_base_llm(base_dir, base_spec(base).dtype, "cpu")
    abstractor_cfg = AbstractorConfig(
        vision_width=vision.width, llm_width=llm.config.hidden_size, width=sizes.width, layers=sizes.layers,
        heads=sizes.heads, num_temporal_queries=sizes.num_temporal_queries,
        num_spatial_queries=sizes.num_spatial_queries, max_frames=64, max_patches=vision.tokens_per_frame,
        memory=sizes.memory,  # type: ignore[arg-type]
    )
    model = GPT4VideoModel(vision, VideoAbstractor(abstractor_cfg), attach_new_lora(llm, lora), tokenizer, prompt)
    config = CheckpointConfig(
        vision=vision_cfg, abstractor=abstractor_cfg,
        llm=LLMConfig(path=None, base=base, base_sha256=base_spec(base).gguf_sha256, dtype=base_spec(base).dtype),
        lora=lora, prompt=prompt,
        info={"built_by": "model.train.init", "seed": seed, "vision_from": str(vision_from), "trained": False},
    )
    if out.exists():
        shutil.rmtree(out)
    save_checkpoint(model, out, config)
    log.info("checkpoint on base %s written to %s", base, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train init", description=__doc__.splitlines()[0])
    parser.add_argument("--vision-from", type=Path, required=True, help="checkpoint whose vision tower to take")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default=DEFAULT_BASE, help="named base LLM (gpt4video build-base)")
    parser.add_argument("--system-prompt", help="the checkpoint's system prompt (default: the stock one)")
    parser.add_argument("--seed", type=int, default=0)
    for f in dataclasses.fields(AbstractorSizes):
        parser.add_argument(f"--abstractor-{f.name.replace('_', '-')}", dest=f.name, type=type(f.default),
                            default=f.default)
    args = parser.parse_args(argv)
    sizes = AbstractorSizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(AbstractorSizes)})
    prompt = PromptConfig(system=args.system_prompt) if args.system_prompt is not None else PromptConfig()
    init_checkpoint(args.out, args.vision_from, args.base, sizes, prompt=prompt, seed=args.seed)
    print(args.out)
    return 0
