"""Stages 0, 1 and 2 learn on a tiny batch and write checkpoints the server loads.

One tiny shapes world (32 px, 4-6 frames) and the default tiny model sizes keep every
stage to a few seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint
from model.data import binding
from model.data.instructions import BuilderConfig, build_file
from model.data.shapes import WorldConfig, generate_split, read_records
from model.engine.base import GenerationRequest, SamplingParams, Turn
from model.engine.hf_engine import HFEngine
from model.train import stage0, stage1, stage2
from model.train.data import DialogueItem, FeatureStore, FrameStore, caption_dialogues, load_dialogues
from model.train.modules import DialogueLoss

WORLD = WorldConfig(size=32, min_frames=4, max_frames=6)
QUIET = ["--no-progress", "--threads", "1"]
LORA_TARGETS = ("q_proj", "v_proj", "down_proj")  # not the stock pair, so the option is seen to act


def _log(checkpoint: Path) -> list[dict]:
    return [json.loads(line) for line in (checkpoint / "training_log.jsonl").read_text().splitlines()]


def _weights(directory: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(directory / name))


def _objective(checkpoint: Path, dialogues: list[DialogueItem]) -> float:
    """A stage's own loss over every training dialogue (no dropout): a whole-set figure, not
    one noisy batch, so "training reduced the loss" is not decided by which batch came first."""
    model = load_checkpoint(checkpoint)
    model.eval()
    loss = DialogueLoss(model, FeatureStore(model, FrameStore(model.vision.cfg.num_frames,
                                                              model.vision.cfg.image_size)))
    with torch.no_grad():
        return float(sum(loss(dialogues[i:i + 8]).item() for i in range(0, len(dialogues), 8)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_split(root / "shapes", "train", 8, seed=0, cfg=WORLD, progress=False)
    generate_split(root / "shapes", "val", 4, seed=0, cfg=WORLD, progress=False)
    cfg = BuilderConfig(include_refusals=False, min_rounds=2, max_rounds=3)
    build_file(root / "shapes" / "train.jsonl", root / "train.jsonl", cfg)
    build_file(root / "shapes" / "val.jsonl", root / "val.jsonl", cfg.model_copy(update={"seed": 1}))
    assert binding.main(["--captions", str(root / "shapes" / "train.jsonl"), "--out", str(root / "binding.jsonl"),
                         "--per-video", "2"]) == 0
    return root


@pytest.fixture(scope="module")
def stage0_dir(world: Path) -> Path:
    out = world / "stage0"
    assert stage0.main([
        "--captions", str(world / "shapes" / "train.jsonl"), "--val-captions", str(world / "shapes" / "val.jsonl"),
        "--instructions", str(world / "train.jsonl"), "--out", str(out), "--vision-steps", "30",
        "--vision-batch", "4", "--vision-lr", "3e-3", "--llm-steps", "80", "--llm-batch", "8",
        "--llm-lr", "3e-3", "--eval-every", "0", "--lora-targets", ",".join(LORA_TARGETS), *QUIET,
    ]) == 0
    return out


@pytest.fixture(scope="module")
def stage1_dir(world: Path, stage0_dir: Path) -> Path:
    out = world / "stage1"
    assert stage1.main([
        "--checkpoint", str(stage0_dir), "--captions", str(world / "shapes" / "train.jsonl"),
        "--val-captions", str(world / "shapes" / "val.jsonl"), "--out", str(out), "--steps", "25",
        "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "2", "--eval-every", "10", *QUIET,
    ]) == 0
    return out


def test_stage0_reduces_both_losses_and_leaves_a_noop_lora(stage0_dir: Path) -> None:
    (record,) = _log(stage0_dir)
    for part in ("vision", "llm"):
        assert record[part]["last_loss"] < record[part]["first_loss"], (part, record[part])
    model = load_checkpoint(stage0_dir)
    assert model.config.info["trained"] is True
    lora_b = [p for n, p in model.llm.named_parameters() if "lora_B" in n]
    assert lora_b and all(float(p.abs().max()) == 0.0 for p in lora_b)
    wrapped = {n.split(".lora_B")[0].rsplit(".", 1)[-1] for n, _ in model.llm.named_parameters() if "lora_B" in n}
    assert wrapped == set(LORA_TARGETS)


def test_stage0_llm_reads_every_video_as_its_caption_and_learns_only_assistant_text(
    world: Path, stage0_dir: Path
) -> None:
    captions = world / "shapes" / "train.jsonl"
    dialogues = stage0.grounded_dialogues(captions, [world / "train.jsonl"])
    by_caption = {r.caption for r in read_records(captions)}
    describe = dialogues[:len(by_caption)]
    assert [d[1].content for d in describe] == [r.caption for r in read_records(captions)]
    assert all(d[0].content.startswith(f"[{d[1].content}] ") for d in describe)
    shown = [t for d in dialogues[len(by_caption):] for t in d if t.content.startswith("[")]
    assert shown and all(t.role == "user" and t.content[1:].split("]")[0] in by_caption for t in shown)
    assert all(not t.videos for d in dialogues for t in d), "stage 0 has no video tokens"
    # Loss on assistant text only: user tokens (the captions standing in for videos) carry no label.
    model = load_checkpoint(stage0_dir)
    seq = model.build_sequence(describe[0], {}, add_generation_prompt=False)
    labelled = model.tokenizer.decode(seq.labels[seq.labels >= 0].tolist(), skip_special_tokens=True)
    assert labelled.strip() == describe[0][1].content


def test_stage1_trains_only_the_abstractor(world: Path, stage0_dir: Path, stage1_dir: Path) -> None:
    captions = caption_dialogues(world / "shapes" / "train.jsonl")
    assert _objective(stage1_dir, captions) < 0.95 * _objective(stage0_dir, captions)
    before, after = _weights(stage0_dir, "abstractor.safetensors"), _weights(stage1_dir, "abstractor.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for name in ("llm/model.safetensors", "vision/open_clip_model.safetensors"):
        a, b = _weights(stage0_dir, name), _weights(stage1_dir, name)
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} changed in stage 1"


def test_stage2_trains_the_lora_and_the_server_engine_answers(world: Path, stage1_dir: Path) -> None:
    out = world / "stage2"
    assert stage2.main([
        "--checkpoint", str(stage1_dir), "--instructions", str(world / "train.jsonl"), str(world / "binding.jsonl"),
        "--val-instructions", str(world / "val.jsonl"), "--out", str(out), "--steps", "40",
        "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "2", "--eval-every", "0", *QUIET,
    ]) == 0
    instructions, bindings = load_dialogues(world / "train.jsonl"), load_dialogues(world / "binding.jsonl")
    assert bindings, "fixture: the world has two-object videos"
    # The stage's objective is over both files; the second file alone also improves (it was read).
    assert _objective(out, instructions + bindings) < 0.95 * _objective(stage1_dir, instructions + bindings)
    assert _objective(out, bindings) < 0.95 * _objective(stage1_dir, bindings)
    lora_before = _weights(stage1_dir, "lora/adapter_model.safetensors")
    lora_after = _weights(out, "lora/adapter_model.safetensors")
    assert any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    base_before, base_after = _weights(stage1_dir, "llm/model.safetensors"), _weights(out, "llm/model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    abs_before, abs_after = _weights(stage1_dir, "abstractor.safetensors"), _weights(out, "abstractor.safetensors")
    assert all(torch.equal(abs_before[k], abs_after[k]) for k in abs_before)  # no --train-abstractor

    engine = HFEngine(load_checkpoint(out))
    video = world / "shapes" / "val" / "shapes-val-000000.mp4"
    (result,) = engine.generate([GenerationRequest(
        "r1", (Turn("user", "Describe the video.", ("v",)),), SamplingParams(max_new_tokens=8),
        video_paths={"v": str(video)})])
    assert result.error is None and result.finish_reason in ("stop", "length")
    assert result.prompt_tokens > load_checkpoint(out).num_video_tokens


def test_resume_continues_from_the_saved_step(world: Path, stage0_dir: Path) -> None:
    out = world / "resumed"
    common = ["--checkpoint", str(stage0_dir), "--captions", str(world / "shapes" / "train.jsonl"),
              "--out", str(out), "--batch-size", "4", "--eval-every", "0", "--save-every", "2", *QUIET]
    assert stage1.main([*common, "--steps", "4"]) == 0
    state = out.parent / "resumed.train-state" / "progress.json"
    first = json.loads(state.read_text())
    assert first["step"] == 4 and len(first["train_losses"]) == 4
    assert stage1.main([*common, "--steps", "6", "--resume"]) == 0
    second = json.loads(state.read_text())
    assert second["step"] == 6
    assert second["train_losses"][:4] == first["train_losses"] and len(second["train_losses"]) == 6


def test_stage1_train_vision_fine_tunes_the_visual_tower_only(world: Path, stage0_dir: Path) -> None:
    out = world / "stage1-vision"
    assert stage1.main([
        "--checkpoint", str(stage0_dir), "--captions", str(world / "shapes" / "train.jsonl"),
        "--out", str(out), "--steps", "25", "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "2",
        "--eval-every", "0", "--train-vision", "--vision-lr", "1e-3", *QUIET,
    ]) == 0
    (record,) = _log(out)
    assert record["train_vision"] is True
    assert record["last_loss"] < record["first_loss"]
    before, after = _weights(stage0_dir, "vision/open_clip_model.safetensors"), \
        _weights(out, "vision/open_clip_model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("visual.") for k in changed)
    assert not any(not k.startswith("visual.") for k in changed), "only the image tower may change"
    llm_before, llm_after = _weights(stage0_dir, "llm/model.safetensors"), _weights(out, "llm/model.safetensors")
    assert all(torch.equal(llm_before[k], llm_after[k]) for k in llm_before)

    # The server's loader reads the fine-tuned tower: its frame tokens differ from stage 0's.
    frames = torch.randint(0, 256, (1, 2, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        tokens_before = load_checkpoint(stage0_dir).vision(frames)  # (1, 2, P, C)
        tokens_after = load_checkpoint(out).vision(frames)  # (1, 2, P, C)
    assert tokens_before.shape == tokens_after.shape
    assert not torch.allclose(tokens_before, tokens_after)
