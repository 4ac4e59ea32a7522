"""Video abstractor: a fixed number of LLM tokens from any number of frames.

Learnable temporal queries `Qt (Nt, D)` and spatial queries `Qs (Ns, D)` cross-attend
to the frame features `Fv (B, T, P, C)`; `[Qt_out ; Qs_out]` is projected to the LLM
width. The token count is `Nt + Ns` whatever T is.

Memory layouts (`memory`):
- "factorized" (default, as Video-ChatGPT-style pooling): temporal queries read the
  per-frame tokens pooled over patches `(B, T, D)` plus a temporal position; spatial
  queries read the per-patch tokens pooled over time `(B, P, D)` plus a spatial
  position. Cheap: attention cost O(T + P) per query.
- "full": both query sets read all `T * P` tokens with temporal + spatial positions.
  Sharper, O(T * P) per query.
- "full_delta": "full" plus `(T - 1) * P` change tokens `proj(Fv[t] - Fv[t-1])` at the
  same positions. Additive position codes cannot pair *where* with *when* inside one
  token, so motion direction is otherwise only recoverable through learned, time-selective
  attention; a change token carries it directly (an object moving left leaves "appeared"
  features on its left edge and "vanished" ones on its right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class AbstractorConfig:
    vision_width: int = 1024  # C: ViT-L/14 token width
    llm_width: int = 4096  # D_llm: LLaMA-7B hidden size
    width: int = 1024  # D: abstractor width (reference implementation)
    layers: int = 6
    heads: int = 16
    num_temporal_queries: int = 64
    num_spatial_queries: int = 64
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_frames: int = 64  # size of the learnable temporal position table
    max_patches: int = 257  # ViT-L/14 at 224 px: 1 CLS + 16*16 patches
    memory: Literal["factorized", "full", "full_delta"] = "factorized"

    @property
    def num_tokens(self) -> int:
        return self.num_temporal_queries + self.num_spatial_queries


class _QueryBlock(nn.Module):
    """Self-attention among queries, cross-attention to memory, feed-forward; pre-norm."""

    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        d = cfg.width
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm_q = nn.LayerNorm(d)
        self.norm_mem = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, q: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(q)  # (B, N, D)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]  # (B, N, D)
        m = self.norm_mem(mem)  # (B, M, D)
        q = q + self.cross_attn(self.norm_q(q), m, m, need_weights=False)[0]  # (B, N, D)
        return q + self.ff(self.norm_ff(q))  # (B, N, D)


class VideoAbstractor(nn.Module):
    def __init__(self, cfg: AbstractorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.input_proj = nn.Linear(cfg.vision_width, d)
        self.temporal_pos = nn.Parameter(torch.randn(cfg.max_frames, d) * 0.02)  # (Tmax, D)
        self.spatial_pos = nn.Parameter(torch.randn(cfg.max_patches, d) * 0.02)  # (Pmax, D)
        self.temporal_queries = nn.Parameter(torch.randn(cfg.num_temporal_queries, d) * 0.02)
        self.spatial_queries = nn.Parameter(torch.randn(cfg.num_spatial_queries, d) * 0.02)
        self.temporal_blocks = nn.ModuleList(_QueryBlock(cfg) for _ in range(cfg.layers))
        self.spatial_blocks = nn.ModuleList(_QueryBlock(cfg) for _ in range(cfg.layers))
        if cfg.memory == "full_delta":
            self.delta_proj = nn.Linear(d, d)
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, cfg.llm_width)

    def forward(self, fv: torch.Tensor) -> torch.Tensor:
        """Fv `(B, T, P, C)` -> F_video `(B, Nt + Ns, D_llm)`."""
        b, t, p, _ = fv.shape
        if t > self.cfg.max_frames or p > self.cfg.max_patches:
            raise ValueError(
                f"abstractor takes at most {self.cfg.max_frames} frames and "
                f"{self.cfg.max_patches} tokens a frame, got {t} and {p}"
            )
        x = self.input_proj(fv)  # (B, T, P, D)
        t_pos = self.temporal_pos[:t][None, :, None, :]  # (1, T, 1, D)
        s_pos = self.spatial_pos[:p][None, None, :, :]  # (1, 1, P, D)
        if self.cfg.memory in {"full", "full_delta"}:
            mem = (x + t_pos + s_pos).reshape(b, t * p, -1)  # (B, T*P, D)
            if self.cfg.memory == "full_delta" and t > 1:
                change = self.delta_proj(x[:, 1:] - x[:, :-1])  # (B, T-1, P, D)
                change = (change + t_pos[:, 1:] + s_pos).reshape(b, (t - 1) * p, -1)  # (B, (T-1)*P, D)
                mem = torch.cat([mem, change], dim=1)  # (B, (2T-1)*P, D)
            temporal_mem = spatial_mem = mem
        else:
            temporal_mem = x.mean(dim=2) + t_pos[:, :, 0, :]  # (B, T, D)
            spatial_mem = x.mean(dim=1) + s_pos[:, 0, :, :]  # (B, P, D)
        qt = self.temporal_queries.expand(b, -1, -1)  # (B, Nt, D)
        qs = self.spatial_queries.expand(b, -1, -1)  # (B, Ns, D)
        for block in self.temporal_blocks:
            qt = block(qt, temporal_mem)  # (B, Nt, D)
        for block in self.spatial_blocks:
            qs = block(qs, spatial_mem)  # (B, Ns, D)
        tokens = torch.cat([qt, qs], dim=1)  # (B, Nt+Ns, D)
        return self.out_proj(self.out_norm(tokens))  # (B, Nt+Ns, D_llm)
