"""Shapes at every stage: frames -> FrameEncoder -> abstractor -> F_video."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.abstractor import AbstractorConfig, VideoAbstractor
from tests.frames import seeded_frames

SMALL = AbstractorConfig(
    vision_width=24, llm_width=40, width=32, layers=1, heads=4,
    num_temporal_queries=3, num_spatial_queries=5, max_frames=8, max_patches=10,
)


def frames_tensor(key: str, b: int, t: int, size: int) -> torch.Tensor:
    return torch.from_numpy(seeded_frames(key, b * t, size)).reshape(b, t, size, size, 3)  # (B, T, H, W, 3)


def test_frame_encoder_yields_per_patch_tokens(tiny_model) -> None:
    vision = tiny_model.vision
    size = vision.cfg.image_size
    grid = size // int(vision.clip.visual.patch_size[0])
    assert vision.tokens_per_frame == 1 + grid * grid  # CLS + patches
    fv = vision(frames_tensor("enc", 2, 3, size))  # (B, T, P, C)
    assert fv.shape == (2, 3, vision.tokens_per_frame, vision.width)
    assert torch.isfinite(fv).all()
    # Frames are encoded independently: frame (1, 2) alone gives the same tokens.
    alone = vision(frames_tensor("enc", 2, 3, size)[1:, 2:])  # (1, 1, P, C)
    torch.testing.assert_close(alone[0, 0], fv[1, 2], rtol=1e-5, atol=1e-5)


def test_frame_encoder_resizes_any_frame_size(tiny_model) -> None:
    vision = tiny_model.vision
    odd = torch.from_numpy(seeded_frames("odd", 2, 45))[:, :, :37].reshape(1, 2, 45, 37, 3)  # (1, 2, 45, 37, 3)
    fv = vision(odd)  # (1, 2, P, C)
    assert fv.shape == (1, 2, vision.tokens_per_frame, vision.width)


def test_frame_encoder_is_frozen(tiny_model) -> None:
    vision = tiny_model.vision
    assert not any(p.requires_grad for p in vision.parameters())
    with torch.enable_grad():
        fv = vision(frames_tensor("grad", 1, 1, vision.cfg.image_size))  # (1, 1, P, C)
    assert not fv.requires_grad


def test_encode_frames_gives_fixed_token_count(tiny_model) -> None:
    cfg = tiny_model.abstractor.cfg
    size = tiny_model.vision.cfg.image_size
    for t in (1, 3, 8):
        with torch.no_grad():
            f_video = tiny_model.encode_frames(frames_tensor(f"t{t}", 2, t, size))  # (B, Nq, D_llm)
        assert f_video.shape == (2, cfg.num_temporal_queries + cfg.num_spatial_queries, cfg.llm_width)
        assert tiny_model.num_video_tokens == f_video.shape[1]
        hidden = tiny_model.llm.get_input_embeddings().weight.shape[1]
        assert f_video.shape[2] == hidden  # the tokens live in the LLM's embedding space
    # Different videos give different tokens (the output is not a constant).
    with torch.no_grad():
        a = tiny_model.encode_frames(frames_tensor("a", 1, 4, size))  # (1, Nq, D)
        b = tiny_model.encode_frames(frames_tensor("b", 1, 4, size))  # (1, Nq, D)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("memory", ["factorized", "full", "full_delta"])
def test_abstractor_token_count_is_invariant_to_frame_count(memory: str) -> None:
    torch.manual_seed(0)
    abstractor = VideoAbstractor(dataclasses.replace(SMALL, memory=memory)).eval()
    outputs = {}
    for t in (1, 3, 8):
        fv = torch.randn(2, t, 7, SMALL.vision_width)  # (B, T, P, C)
        with torch.no_grad():
            outputs[t] = abstractor(fv)  # (B, Nt+Ns, D_llm)
        assert outputs[t].shape == (2, SMALL.num_tokens, SMALL.llm_width)
        assert torch.isfinite(outputs[t]).all()
    assert SMALL.num_tokens == 3 + 5


@pytest.mark.parametrize("memory", ["factorized", "full", "full_delta"])
def test_abstractor_rejects_too_many_frames(memory: str) -> None:
    abstractor = VideoAbstractor(dataclasses.replace(SMALL, memory=memory))
    fv = torch.randn(1, SMALL.max_frames + 1, 7, SMALL.vision_width)  # (1, Tmax+1, P, C)
    with pytest.raises(ValueError, match=rf"at most {SMALL.max_frames} frames.*got {SMALL.max_frames + 1}"):
        abstractor(fv)
    ok = torch.randn(1, SMALL.max_frames, 7, SMALL.vision_width)  # (1, Tmax, P, C)
    assert abstractor(ok).shape == (1, SMALL.num_tokens, SMALL.llm_width)


def test_abstractor_rejects_too_many_patches() -> None:
    abstractor = VideoAbstractor(SMALL)
    fv = torch.randn(1, 2, SMALL.max_patches + 1, SMALL.vision_width)  # (1, T, Pmax+1, C)
    with pytest.raises(ValueError, match=rf"{SMALL.max_patches} tokens a frame"):
        abstractor(fv)


def test_factorized_layout_temporal_tokens_first() -> None:
    """[Qt_out ; Qs_out]: with factorized memory the spatial queries read patches pooled
    over time, so reversing the frames changes only the first Nt (temporal) tokens."""
    torch.manual_seed(1)
    abstractor = VideoAbstractor(SMALL).eval()
    fv = torch.randn(1, 4, 7, SMALL.vision_width)  # (1, T, P, C)
    with torch.no_grad():
        out = abstractor(fv)  # (1, Nt+Ns, D)
        flipped = abstractor(fv.flip(1))  # (1, Nt+Ns, D)
    nt = SMALL.num_temporal_queries
    torch.testing.assert_close(out[:, nt:], flipped[:, nt:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, :nt], flipped[:, :nt], atol=1e-4)


def test_full_delta_reads_frame_differences() -> None:
    """Change tokens come from Fv[t] - Fv[t-1] through `delta_proj`: perturbing that
    projection changes the output, so the change tokens are really read."""
    torch.manual_seed(0)
    fv = torch.randn(1, 4, 5, SMALL.vision_width)  # (B, T, P, C)
    abstractor = VideoAbstractor(dataclasses.replace(SMALL, memory="full_delta")).eval()
    with torch.no_grad():
        before = abstractor(fv)  # (B, Nq, D_llm)
        abstractor.delta_proj.weight.mul_(3.0)
        after = abstractor(fv)
        single = abstractor(fv[:, :1])  # one frame: no change tokens at all
    assert not torch.allclose(before, after, atol=1e-5)
    assert single.shape == before.shape
