"""VLLM_LORA_MODE=merged: the checkpoint's adapter merged into a copy of its base LLM,
once, cached. No vLLM needed: the merged directory is a plain transformers LLaMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import model.engine.vllm_merge as vllm_merge
from model.checkpoint import load_checkpoint
from model.engine.vllm_merge import MergeError, merge_key, merged_llm_dir
from model.tiny import build_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def test_the_merged_llm_computes_what_base_plus_adapter_does(checkpoint, tmp_path):
    merged_dir = merged_llm_dir(checkpoint / "llm", checkpoint / "lora", tmp_path)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with_adapter = load_checkpoint(checkpoint).llm.eval()  # PEFT model, adapter unmerged
    ids = torch.tensor([[1, 5, 9, 17, 33, 2, 7]])  # (1, T)
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits  # (1, T, V)
        got = merged(input_ids=ids).logits  # (1, T, V)
        base = with_adapter.get_base_model()
        with with_adapter.disable_adapter():
            without = base(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, without, atol=1e-3)  # the adapter is in there
    assert (merged_dir / "tokenizer.json").is_file() or (merged_dir / "tokenizer_config.json").is_file()


def test_the_merge_is_done_once_and_reused(checkpoint, tmp_path, monkeypatch):
    first = merged_llm_dir(checkpoint / "llm", checkpoint / "lora", tmp_path)

    def no_second_merge(*_args):
        raise AssertionError("merged again although the cache has it")

    monkeypatch.setattr(vllm_merge, "_merge_into", no_second_merge)
    assert merged_llm_dir(checkpoint / "llm", checkpoint / "lora", tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no leftover work directory


def test_another_adapter_is_another_merge(checkpoint, tmp_path):
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert merge_key(checkpoint / "llm", checkpoint / "lora") != merge_key(checkpoint / "llm", other / "lora")


def test_an_adapter_of_another_base_fails_with_what_to_do(checkpoint, tmp_path):
    wider = build_tiny_checkpoint(tmp_path / "wider", seed=0, sizes=_wider())
    with pytest.raises(MergeError, match="VLLM_LORA_MODE=lora"):
        merged_llm_dir(checkpoint / "llm", wider / "lora", tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written left


def _wider():
    from model.tiny import TinySizes

    return TinySizes(llm_width=128)
