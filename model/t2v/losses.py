"""The two training objectives of `gpt4video train t2v`, as modules for the shared loop.

Each module's `forward(items) -> scalar loss` takes indices into tensors it holds (so
`model.train.common.train_loop` drives it like any stage), and draws its noise from
torch's generator while training (accelerate saves that state, so a resumed run goes on
where it was) but from a generator seeded by the batch in eval mode (so every
validation pass scores the same noise and its figures are comparable).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet3DConditionModel
from torch import nn
from transformers import CLIPTextModel


def to_unit_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` -> float `(N, 3, H, W)` in [-1, 1], the VAE's input range."""
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def foreground_weights(images: torch.Tensor, weight: float) -> torch.Tensor:
    """`(N, 3, H, W)` -> `(N, 1, H, W)`: 1 on the background, 1 + weight on objects.

    Objects cover a few percent of a frame; a plain MSE lets a VAE blur them into the
    background. The background is each image's median colour; an object pixel is one
    far from it.
    """
    median = images.flatten(2).median(dim=2).values[:, :, None, None]  # (N, 3, 1, 1)
    far = (images - median).abs().amax(dim=1, keepdim=True) > 0.25  # (N, 1, H, W)
    return 1.0 + weight * far.float()


class VaeLoss(nn.Module):
    """Stage A: reconstruct single frames through the AutoencoderKL (weighted MSE + small KL)."""

    def __init__(self, vae: AutoencoderKL, frames: torch.Tensor, kl_weight: float = 1e-6,
                 foreground_weight: float = 8.0) -> None:
        super().__init__()
        self.vae = vae
        self.frames = frames  # (N, H, W, 3) uint8, train then val frames
        self.kl_weight = kl_weight
        self.foreground_weight = foreground_weight

    def forward(self, items: Sequence[int]) -> torch.Tensor:
        device = next(self.vae.parameters()).device
        x = to_unit_range(self.frames[list(items)]).to(device)  # (B, 3, H, W)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if self.training else posterior.mode()  # (B, C, h, w); eval: deterministic
        recon = self.vae.decode(z).sample  # (B, 3, H, W)
        weights = foreground_weights(x, self.foreground_weight)  # (B, 1, H, W)
        mse = (weights * (recon - x) ** 2).mean()
        return mse + self.kl_weight * posterior.kl().mean()


class DenoiseLoss(nn.Module):
    """Stage B: the UNet3D and the CLIP text encoder learn to denoise clip latents given captions.

    The target is the scheduler's own (epsilon or v). A share `caption_dropout` of the
    captions is replaced by the empty prompt, the unconditional input that classifier-free
    guidance subtracts at sampling time (the pipeline encodes "" for it).
    """

    def __init__(self, unet: UNet3DConditionModel, text_encoder: CLIPTextModel, noise: DDPMScheduler,
                 latents: torch.Tensor, input_ids: torch.Tensor, empty_ids: torch.Tensor,
                 caption_dropout: float = 0.1) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.noise = noise
        self.latents = latents  # (N, C, T, h, w), already times the VAE's scaling factor
        self.input_ids = input_ids  # (N, L) padded token ids of each clip's caption
        self.empty_ids = empty_ids  # (L,) the empty prompt
        self.caption_dropout = caption_dropout

    def forward(self, items: Sequence[int]) -> torch.Tensor:
        device = next(self.unet.parameters()).device
        index = torch.as_tensor(list(items))
        x0 = self.latents[index].to(device)  # (B, C, T, h, w)
        ids = self.input_ids[index].clone()  # (B, L)
        generator = None if self.training else torch.Generator().manual_seed(int(index[0]))
        n = len(index)
        if self.training and self.caption_dropout > 0:
            drop = torch.rand(n) < self.caption_dropout  # (B,)
            ids[drop] = self.empty_ids
        steps = self.noise.config.num_train_timesteps
        t = torch.randint(0, steps, (n,), generator=generator)  # (B,)
        eps = torch.randn(x0.shape, generator=generator).to(device)  # (B, C, T, h, w)
        t = t.to(device)
        noisy = self.noise.add_noise(x0, eps, t)  # (B, C, T, h, w)
        v_pred = self.noise.config.prediction_type == "v_prediction"
        target = self.noise.get_velocity(x0, eps, t) if v_pred else eps  # (B, C, T, h, w)
        text = self.text_encoder(ids.to(device))[0]  # (B, L, D)
        pred = self.unet(noisy, t, encoder_hidden_states=text).sample  # (B, C, T, h, w)
        return F.mse_loss(pred, target)
