"""Frame encoder: an open_clip vision tower that yields per-patch tokens.

The tower is created by name (a built-in open_clip architecture such as "ViT-L-14") or
from a local open_clip config directory (`local-dir:` schema, how the tiny and trained
towers are stored), and its weights come from a local file. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class VisionConfigError(ValueError):
    """The vision section of a checkpoint names no usable tower."""


@dataclass(frozen=True)
class VisionConfig:
    # Exactly one of `name` (built-in open_clip architecture) and `config_dir` (a
    # directory holding open_clip_config.json, relative to the checkpoint) is set.
    name: str | None = None
    config_dir: str | None = None
    # Weights file (relative to the checkpoint, or absolute). None: random init, only
    # sensible for tests.
    weights: str | None = None
    # True when the weights are a real pretrained CLIP: enables the frame safety check.
    pretrained: bool = False
    num_frames: int = 8  # frames sampled a video (reference: 8)
    image_size: int = 224  # input resolution (reference: 224, ViT-L/14 -> 257 tokens)
    frame_batch: int = 64  # frames a forward pass, to bound memory


def clip_architecture(cfg: VisionConfig, root: Path) -> str:
    """The open_clip model name for `create_model` / `get_tokenizer`."""
    if (cfg.name is None) == (cfg.config_dir is None):
        raise VisionConfigError("vision: set exactly one of 'name' and 'config_dir'")
    if cfg.name is not None:
        if cfg.name.startswith(("hf-hub:", "local-dir:")) or cfg.name not in open_clip.list_models():
            raise VisionConfigError(
                f"vision.name {cfg.name!r} is not a built-in open_clip architecture; "
                "use vision.config_dir for a custom one"
            )
        arch = cfg.name
    else:
        arch = f"local-dir:{(root / cfg.config_dir).resolve()}"
    return arch


def clip_tokenizer(cfg: VisionConfig, root: Path):
    """The text tokenizer matching the tower (open_clip's bundled BPE for CLIP models)."""
    return open_clip.get_tokenizer(clip_architecture(cfg, root))


class _DropOpenClipRandomInit(logging.Filter):
    """open_clip warns "Model initialized randomly" for every model built without weights,
    although `create_clip` loads them right after: a false alarm in every server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _no_random_init_warning() -> Iterator[None]:
    root = logging.getLogger()  # open_clip logs through the root logger
    drop = _DropOpenClipRandomInit()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def create_clip(cfg: VisionConfig, root: Path, device: str = "cpu") -> nn.Module:
    """Build the full open_clip model (image + text towers) and load local weights."""
    arch = clip_architecture(cfg, root)
    with _no_random_init_warning():  # the weights are loaded below (or warned about there)
        model = open_clip.create_model(arch, pretrained=None, load_weights=False, device=device)
    if cfg.config_dir is not None:
        # Kept on the module so a trained tower can be saved in the same format.
        model.g4v_open_clip_config = json.loads((root / cfg.config_dir / "open_clip_config.json").read_text())
    if cfg.weights is not None:
        weights = Path(cfg.weights)
        weights = weights if weights.is_absolute() else root / weights
        if not weights.is_file():
            raise VisionConfigError(f"vision.weights: no file at {weights}")
        open_clip.load_checkpoint(model, str(weights), device=device)
    else:
        log.warning("vision tower %s has no weights file: random initialisation", arch)
    return model


class FrameEncoder(nn.Module):
    """uint8 frames `(B, T, H, W, 3)` -> per-patch tokens `Fv (B, T, P, C)`, P = 1 + patches.

    Frozen by default (no grad, eval mode); `trainable=True` is for stage-0 pretraining.
    """

    def __init__(self, clip_model: nn.Module, cfg: VisionConfig) -> None:
        super().__init__()
        self.clip = clip_model
        self.cfg = cfg
        pre = open_clip.get_model_preprocess_cfg(clip_model)
        self.register_buffer("mean", torch.tensor(pre["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre["std"]).view(1, 3, 1, 1), persistent=False)
        self.trainable = False
        self.freeze()

    @property
    def width(self) -> int:
        return int(self.clip.visual.transformer.width)

    @property
    def tokens_per_frame(self) -> int:
        grid = self.cfg.image_size // int(self.clip.visual.patch_size[0])
        return 1 + grid * grid

    def freeze(self) -> None:
        self.trainable = False
        self.clip.requires_grad_(False)
        self.clip.eval()

    def train(self, mode: bool = True) -> FrameEncoder:
        super().train(mode)
        if not self.trainable:
            self.clip.eval()
        return self

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 `(N, H, W, 3)` -> normalised float `(N, 3, S, S)`."""
        x = frames.permute(0, 3, 1, 2).to(self.mean.dtype) / 255.0  # (N, 3, H, W)
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std  # (N, 3, S, S)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        flat = frames.reshape(b * t, *frames.shape[2:])  # (B*T, H, W, 3)
        chunks = []
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            for start in range(0, flat.shape[0], self.cfg.frame_batch):
                pixels = self.preprocess(flat[start:start + self.cfg.frame_batch])  # (n, 3, S, S)
                out = self.clip.visual.forward_intermediates(
                    pixels, indices=1, normalize_intermediates=True, intermediates_only=True,
                    output_fmt="NLC", output_extra_tokens=True,
                )
                cls = out["image_intermediates_prefix"][-1]  # (n, 1, C)
                patches = out["image_intermediates"][-1]  # (n, P-1, C)
                chunks.append(torch.cat([cls, patches], dim=1))  # (n, P, C)
        tokens = torch.cat(chunks, dim=0)  # (B*T, P, C)
        return tokens.reshape(b, t, *tokens.shape[1:])  # (B, T, P, C)
