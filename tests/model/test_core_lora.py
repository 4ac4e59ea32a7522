"""LoRA + abstractor training surface: what is trainable, where gradients go, and that a
saved adapter is a plain PEFT adapter that reloads to the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from model.checkpoint import load_checkpoint
from model.engine.base import Turn
from model.network import GPT4VideoModel
from tests.frames import seeded_frames


def training_batch(model: GPT4VideoModel):
    size = model.vision.cfg.image_size
    frames = torch.from_numpy(seeded_frames("train", 3, size))[None]  # (1, T, H, W, 3)
    f_video = model.encode_frames(frames)[0]  # (Nq, D)
    turns = [Turn("user", "Describe the video.", ("v",)), Turn("assistant", "a red circle moves to the left.")]
    seq = model.build_sequence(turns, {"v": f_video}, add_generation_prompt=False)
    return model.collate([seq], padding_side="right")


def probe_embeds(model: GPT4VideoModel) -> torch.Tensor:
    seq = model.build_sequence([Turn("user", "What colour is it?")], {}, add_generation_prompt=True)
    return seq.inputs_embeds[None].detach()  # (1, L, D)


@pytest.fixture
def trainable_model(tiny_checkpoint_dir: Path) -> GPT4VideoModel:
    model = load_checkpoint(tiny_checkpoint_dir, trainable_lora=True)
    model.set_training_mode()
    return model


def test_only_lora_and_abstractor_are_trainable(trainable_model: GPT4VideoModel) -> None:
    names = trainable_model.trainable_parameter_names()
    lora = [n for n in names if n.startswith("llm.") and "lora_" in n]
    abstractor = [n for n in names if n.startswith("abstractor.")]
    assert names and sorted(names) == sorted(lora + abstractor)
    assert len(abstractor) == len(list(trainable_model.abstractor.parameters()))
    all_lora = [n for n, _ in trainable_model.llm.named_parameters() if "lora_" in n]
    assert len(lora) == len(all_lora) > 0
    assert not any(p.requires_grad for p in trainable_model.vision.parameters())
    assert not trainable_model.llm.get_input_embeddings().weight.requires_grad


def test_training_mode_stages(tiny_checkpoint_dir: Path) -> None:
    model = load_checkpoint(tiny_checkpoint_dir, trainable_lora=True)
    model.set_training_mode(train_abstractor=True, train_lora=False)  # stage 1
    assert {n.split(".")[0] for n in model.trainable_parameter_names()} == {"abstractor"}
    model.set_training_mode(train_abstractor=False, train_lora=True)  # LoRA only
    names = model.trainable_parameter_names()
    assert names and all("lora_" in n for n in names)


def test_backward_reaches_only_trainable_parameters(trainable_model: GPT4VideoModel) -> None:
    loss = trainable_model.loss(training_batch(trainable_model))
    loss.backward()
    trainable = set(trainable_model.trainable_parameter_names())
    with_grad = {n for n, p in trainable_model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    nonzero = {n for n, p in trainable_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_A" in n for n in nonzero)
    assert any("lora_B" in n for n in nonzero)
    # The gradient flows through the video tokens back into the abstractor.
    assert "abstractor.out_proj.weight" in nonzero
    assert "abstractor.temporal_queries" in nonzero and "abstractor.spatial_queries" in nonzero


def test_saved_adapter_reloads_with_peft_to_identical_logits(
    trainable_model: GPT4VideoModel, tiny_checkpoint_dir: Path, tmp_path: Path
) -> None:
    model = trainable_model
    with torch.no_grad():
        before = model.llm(inputs_embeds=probe_embeds(model)).logits  # (1, L, V)
    # One optimiser step so the saved adapter differs from the checkpoint's.
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.loss(training_batch(model)).backward()
    optimiser.step()
    model.eval()

    model.llm.save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert not adapter_config.get("modules_to_save")  # a plain adapter, loadable by vLLM
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}

    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint_dir / "llm", local_files_only=True)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    embeds = probe_embeds(model)  # (1, L, D)
    with torch.no_grad():
        trained = model.llm(inputs_embeds=embeds).logits  # (1, L, V)
        again = reloaded(inputs_embeds=embeds).logits  # (1, L, V)
    assert torch.equal(trained, again)
    assert not torch.allclose(trained, before)  # the step changed the adapter, and it was saved


def test_lora_adapter_changes_the_output(tiny_model: GPT4VideoModel) -> None:
    embeds = probe_embeds(tiny_model)  # (1, L, D)
    with torch.no_grad():
        with_adapter = tiny_model.llm(inputs_embeds=embeds).logits  # (1, L, V)
        with tiny_model.llm.disable_adapter():
            without = tiny_model.llm(inputs_embeds=embeds).logits  # (1, L, V)
        restored = tiny_model.llm(inputs_embeds=embeds).logits  # (1, L, V)
    assert not torch.allclose(with_adapter, without, atol=1e-3)
    assert torch.equal(with_adapter, restored)  # leaving the context re-enables it
