"""`gpt4video train shapes-default` runs every step of the shipped recipe end to end, on the real base.

`--scale` cuts every stage to a few steps and the data to a few dozen items, so this checks
the wiring (each step's argv, which checkpoint the next step starts from, the log and the
report), not what the model learns. It needs the base LLM that `make install` builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.bases import DEFAULT_BASE, BaseModelError, resolve_base
from model.checkpoint import load_checkpoint
from model.data.instructions import read_conversations
from model.train import recipe


def _base_built() -> bool:
    try:
        resolve_base(DEFAULT_BASE)
    except BaseModelError:
        return False
    return True


@pytest.mark.skipif(not _base_built(), reason="base LLM not built: `make install` runs `gpt4video build-base`")
def test_recipe_runs_every_step_on_the_frozen_base(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "shipped"
    assert recipe.main([
        "--work", str(work), "--out", str(out), "--train-videos", "48", "--val-videos", "4",
        "--test-videos", "3", "--scale", "0.004", "--multi-video-groups", "2", "--binding-per-video", "1",
        "--chat-prompts", "3", "--eval-chat-limit", "3", "--no-progress",
    ]) == 0

    chat = read_conversations(work / "chat-train.jsonl")
    assert chat and {c.source for c in chat} == {"chat"}
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["stage0", "stage1", "stage2"]
    report = json.loads((out / "recipe.json").read_text())
    assert {"train stage0 vision", "train init", "data chat", "train stage1", "train stage2", "eval"} <= set(
        report["timings_s"])
    full = json.loads((out / "eval.json").read_text())
    assert set(full["wording"]["test"]["accuracy"]) >= {"shape", "colour", "motion", "count", "caption", "generation"}

    # The shipped checkpoint names its base instead of carrying it; its LoRA was trained in
    # stage 2 (PEFT initialises B to zero, so a trained adapter has a non-zero B).
    assert not (out / "llm").exists()
    config = json.loads((out / "gpt4video.json").read_text())
    assert config["llm"]["base"] == DEFAULT_BASE and config["llm"]["path"] is None
    lora = load_file(str(out / "lora" / "adapter_model.safetensors"))
    assert any("lora_B" in k and torch.count_nonzero(v) > 0 for k, v in lora.items())
    init_abstractor = load_file(str(work / "init" / "abstractor.safetensors"))
    shipped_abstractor = load_file(str(out / "abstractor.safetensors"))
    assert any(not torch.equal(init_abstractor[k], shipped_abstractor[k]) for k in init_abstractor)
    assert load_checkpoint(out).config.info["trained"] is True

    # --continue-from: the data is rebuilt and stage 2 runs on from the shipped checkpoint.
    again = tmp_path / "continued"
    assert recipe.main([
        "--work", str(tmp_path / "work2"), "--out", str(again), "--continue-from", str(out),
        "--train-videos", "48", "--val-videos", "4", "--test-videos", "3", "--scale", "0.004",
        "--multi-video-groups", "2", "--binding-per-video", "1", "--chat-prompts", "3", "--chat-repeat", "2",
        "--eval-chat-limit", "3", "--stage2-opening-tokens", "3", "--stage2-opening-weight", "4",
        "--stage2-loss-per-turn", "--no-progress",
    ]) == 0
    report = json.loads((again / "recipe.json").read_text())
    assert {"data chat", "train stage2", "eval"} <= set(report["timings_s"])
    assert not {"train stage0 vision", "train init", "train stage1"} & set(report["timings_s"])
    log = [json.loads(line) for line in (again / "training_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["stage0", "stage1", "stage2", "stage2"]
    # The stage-2 loss it trained with.
    assert (log[-1]["opening_tokens"], log[-1]["opening_weight"], log[-1]["loss_per_turn"]) == (3, 4.0, True)
    continued = load_file(str(again / "lora" / "adapter_model.safetensors"))
    assert any(not torch.equal(continued[k], lora[k]) for k in lora)
