"""`gpt4video train shapes-default` runs every step of the shipped recipe end to end.

The recipe's own batch sizes need 48 train videos (the stage-0 vision batch); `--scale`
cuts every stage to a few steps, so this checks the wiring (each step's argv, which
checkpoint the next step starts from, the log and the report), not what the model learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.checkpoint import load_checkpoint
from model.data.instructions import read_conversations
from model.train import recipe


def test_recipe_runs_every_step_and_ships_the_binding_run(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "shipped"
    assert recipe.main([
        "--work", str(work), "--out", str(out), "--train-videos", "48", "--val-videos", "4",
        "--test-videos", "4", "--scale", "0.003", "--text-dialogues", "40", "--llm-more-runs", "1",
        "--llm-more-steps", "1", "--multi-video-groups", "2", "--binding-per-video", "1", "--no-progress",
    ]) == 0

    binding = read_conversations(work / "binding-train.jsonl")
    assert binding and {c.source for c in binding} == {"binding"}
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["stage0", "stage0", "stage1", "stage2", "stage2"]
    report = json.loads((out / "recipe.json").read_text())
    assert {"data binding", "train stage2 binding", "eval"} <= set(report["timings_s"])
    accuracy = json.loads((out / "eval.json").read_text())["accuracy"]
    assert set(accuracy) >= {"shape", "colour", "motion", "count", "caption", "generation"}

    # What ships is the binding run, trained further from the first stage-2 checkpoint.
    first = load_file(str(work / "stage2" / "lora" / "adapter_model.safetensors"))
    shipped = load_file(str(out / "lora" / "adapter_model.safetensors"))
    assert first.keys() == shipped.keys()
    assert any(not torch.equal(first[k], shipped[k]) for k in first)
    assert load_checkpoint(out).config.info["trained"] is True
