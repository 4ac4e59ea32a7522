"""Build a TextToVideoSDPipeline's components from an architecture that is data.

An architecture is a named JSON file under `model/t2v/configs/` (`tiny`: random weights
for fast tests; `shapes`: the one `gpt4video train t2v` trains). The builders here are
the only place a VAE, UNet3D, CLIP text encoder or scheduler is constructed, so the tiny
pipeline and the trained one differ only in their numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from model.t2v.errors import T2VConfigError
from model.t2v.tokenizer import clip_tokenizer

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class T2VArchitecture:
    """Sizes of every component; the defaults are the tiny random pipeline's."""

    size: int = 32  # frame side in pixels the pipeline is built for
    # CLIP text encoder; its width is the UNet's cross-attention width.
    text_width: int = 16
    text_layers: int = 2
    text_heads: int = 2
    max_prompt_tokens: int = 32
    vocabulary: str = "bytes"  # "bytes" or "shapes" (byte symbols + the shapes grammar's words)
    # AutoencoderKL: len(vae_channels) - 1 halvings of each side.
    vae_channels: tuple[int, ...] = (8, 8)
    vae_layers_per_block: int = 1
    vae_groups: int = 2
    vae_mid_attention: bool = True
    latent_channels: int = 4
    # UNet3DConditionModel: len(unet_channels) - 1 halvings of the latent.
    unet_channels: tuple[int, ...] = (8, 8)
    unet_layers_per_block: int = 1
    unet_down: tuple[str, ...] = ("CrossAttnDownBlock3D", "DownBlock3D")
    unet_up: tuple[str, ...] = ("UpBlock3D", "CrossAttnUpBlock3D")
    unet_heads: int = 4  # diffusers' `attention_head_dim` (it is the head count in UNet3D)
    unet_groups: int = 2
    # DDIMScheduler keyword arguments (training noises with a DDPMScheduler of the same betas).
    scheduler: dict[str, Any] = field(default_factory=lambda: {
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "clip_sample": False, "set_alpha_to_one": False,
    })

    @property
    def latent_size(self) -> int:
        return self.size // 2 ** (len(self.vae_channels) - 1)


def load_architecture(name_or_path: str | Path) -> T2VArchitecture:
    """`name` of a file in model/t2v/configs (without .json), or a JSON file's path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))
        raise T2VConfigError(f"no text-to-video architecture {name_or_path!r}; known: {names}, or a .json path")
    raw = json.loads(path.read_text())
    known = {f.name for f in fields(T2VArchitecture)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise T2VConfigError(f"{path}: unknown keys {unknown}; allowed: {sorted(known)}")
    return T2VArchitecture(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def build_tokenizer(arch: T2VArchitecture) -> CLIPTokenizer:
    if arch.vocabulary == "bytes":
        return clip_tokenizer((), arch.max_prompt_tokens)
    if arch.vocabulary == "shapes":
        from model.t2v.data import grammar_words

        return clip_tokenizer(grammar_words(), arch.max_prompt_tokens)
    raise T2VConfigError(f"vocabulary {arch.vocabulary!r} is not 'bytes' or 'shapes'")


def build_text_encoder(arch: T2VArchitecture, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_width, intermediate_size=2 * arch.text_width,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
        max_position_embeddings=arch.max_prompt_tokens, projection_dim=arch.text_width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def build_unet(arch: T2VArchitecture) -> UNet3DConditionModel:
    return UNet3DConditionModel(
        sample_size=arch.latent_size, in_channels=arch.latent_channels, out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels, layers_per_block=arch.unet_layers_per_block,
        down_block_types=arch.unet_down, up_block_types=arch.unet_up,
        cross_attention_dim=arch.text_width, attention_head_dim=arch.unet_heads,
        norm_num_groups=arch.unet_groups,
    )


def build_vae(arch: T2VArchitecture) -> AutoencoderKL:
    depth = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
        block_out_channels=arch.vae_channels, layers_per_block=arch.vae_layers_per_block,
        down_block_types=("DownEncoderBlock2D",) * depth, up_block_types=("UpDecoderBlock2D",) * depth,
        norm_num_groups=arch.vae_groups, sample_size=arch.size, mid_block_add_attention=arch.vae_mid_attention,
    )


def build_scheduler(arch: T2VArchitecture) -> DDIMScheduler:
    return DDIMScheduler(**arch.scheduler)


def training_noise_scheduler(scheduler: DDIMScheduler) -> DDPMScheduler:
    """The DDPM scheduler (add_noise, get_velocity) with the sampling scheduler's betas."""
    return DDPMScheduler.from_config(scheduler.config)


def build_pipeline(arch: T2VArchitecture, vae: AutoencoderKL | None = None) -> TextToVideoSDPipeline:
    """Fresh random components (or the given trained VAE), assembled into a pipeline."""
    tokenizer = build_tokenizer(arch)
    text_encoder = build_text_encoder(arch, tokenizer)
    unet = build_unet(arch)
    vae = vae if vae is not None else build_vae(arch)
    return TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=build_scheduler(arch))
