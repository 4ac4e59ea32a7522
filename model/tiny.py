"""Build a complete tiny GPT4Video checkpoint from configs and seeded random weights.

Same format and loading path as a real checkpoint; takes seconds on a CPU. Used by
the tests and as the local default until a trained checkpoint is configured.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from model.abstractor import AbstractorConfig, VideoAbstractor
from model.checkpoint import CheckpointConfig, save_checkpoint
from model.llm import LLMConfig, LoRASettings, attach_new_lora
from model.network import GPT4VideoModel
from model.prompt import PromptConfig
from model.vision import FrameEncoder, VisionConfig, create_clip

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
# A ChatML-style template on the tiny tokenizer's own specials: `<s>` opens a turn and
# `</s>` (EOS) closes it, as `<|im_start|>` / `<|im_end|>` do for SmolLM2.
CHAT_TEMPLATE = Path(__file__).with_name("tiny_chat_template.jinja")

DEFAULT_CORPUS = [
    "system user assistant You are GPT4Video, a helpful assistant that understands videos and can create them.",
    "To show a video, write its caption inside <video></video> tags. <video0></video0> <video1></video1>",
    "Describe the video. What happens in the video? What shape is it? What colour is it? How many objects?",
    "a red circle moves to the left. a blue square moves up. a green triangle moves down. a yellow circle stays still.",
    "a white square moves to the right. a red circle and a blue triangle; the circle moves left.",
    "Sure, here is a video: Here you go. I cannot help with that request. Sorry.",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9 , . ! ? ; : ' \" ( ) -",
]


@dataclass(frozen=True)
class TinySizes:
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 2
    clip_embed_dim: int = 64
    text_width: int = 32
    text_layers: int = 1
    num_frames: int = 4
    abstractor_width: int = 64
    abstractor_layers: int = 1
    abstractor_heads: int = 4
    temporal_queries: int = 4
    spatial_queries: int = 4
    llm_width: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    llm_intermediate: int = 128
    vocab_size: int = 512
    lora_r: int = 16


def train_tokenizer(corpus: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE: any text is representable, so no input is ever `<unk>`."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE.read_text()
    return fast


def tiny_open_clip_config(s: TinySizes) -> dict:
    return {
        "model_cfg": {
            "embed_dim": s.clip_embed_dim,
            "vision_cfg": {"image_size": s.image_size, "layers": s.vision_layers,
                           "width": s.vision_width, "patch_size": s.patch_size, "head_width": 16},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": s.text_width,
                         "heads": 2, "layers": s.text_layers},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }


def build_tiny_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    tokenizer_corpus: Sequence[str] | None = None,
    sizes: TinySizes = TinySizes(),
    prompt: PromptConfig = PromptConfig(),
    lora_targets: Sequence[str] = LoRASettings().target_modules,
) -> Path:
    """`lora_targets`: the LLaMA projections the adapter wraps (stock: q_proj, v_proj)."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    corpus = list(DEFAULT_CORPUS) + list(tokenizer_corpus or [])
    tokenizer = train_tokenizer([*corpus, prompt.system], sizes.vocab_size)

    vision_cfg = VisionConfig(config_dir="vision", weights=None, pretrained=False,
                              num_frames=sizes.num_frames, image_size=sizes.image_size)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_dir = Path(tmp) / "vision"
        cfg_dir.mkdir()
        clip_cfg = tiny_open_clip_config(sizes)
        (cfg_dir / "open_clip_config.json").write_text(json.dumps(clip_cfg))
        clip = create_clip(VisionConfig(config_dir="vision", image_size=sizes.image_size), Path(tmp))
    vision = FrameEncoder(clip, vision_cfg)

    abstractor_cfg = AbstractorConfig(
        vision_width=sizes.vision_width, llm_width=sizes.llm_width, width=sizes.abstractor_width,
        layers=sizes.abstractor_layers, heads=sizes.abstractor_heads,
        num_temporal_queries=sizes.temporal_queries, num_spatial_queries=sizes.spatial_queries,
        max_frames=64, max_patches=vision.tokens_per_frame,
    )
    abstractor = VideoAbstractor(abstractor_cfg)

    llm_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=sizes.llm_width, intermediate_size=sizes.llm_intermediate,
        num_hidden_layers=sizes.llm_layers, num_attention_heads=sizes.llm_heads,
        num_key_value_heads=sizes.llm_kv_heads, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    base = LlamaForCausalLM(llm_config)
    lora_cfg = LoRASettings(r=sizes.lora_r, alpha=sizes.lora_r, target_modules=list(lora_targets))
    llm = attach_new_lora(base, lora_cfg)
    # PEFT initialises B to zero (the adapter is a no-op); give it seeded random values
    # so the tiny adapter visibly changes the output, as a trained one would.
    with torch.no_grad():
        for name, param in llm.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    model = GPT4VideoModel(vision, abstractor, llm, tokenizer, prompt)
    config = CheckpointConfig(
        vision=vision_cfg, abstractor=abstractor_cfg,
        llm=LLMConfig(path="llm", dtype="float32"), lora=lora_cfg, prompt=prompt,
        info={"built_by": "model.tiny.build_tiny_checkpoint", "seed": seed, "trained": False},
    )
    save_checkpoint(model, out, config)
    log.info("tiny checkpoint written to %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video build-tiny", description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_checkpoint(args.out_dir, seed=args.seed)
    print(f"tiny checkpoint: {path}")
    return 0
