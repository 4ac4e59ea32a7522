"""Checkpoint directories: save/load round trip, and configs that fail loudly by name."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from model.checkpoint import (
    ABSTRACTOR_FILE,
    CONFIG_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from model.engine.base import Turn
from model.network import GPT4VideoModel
from tests.frames import seeded_frames


def outputs(model: GPT4VideoModel) -> tuple[torch.Tensor, torch.Tensor]:
    """F_video for fixed frames, and the logits of a prompt carrying that video."""
    frames = torch.from_numpy(seeded_frames("roundtrip", 3, model.vision.cfg.image_size))[None]  # (1, T, H, W, 3)
    with torch.no_grad():
        f_video = model.encode_frames(frames)  # (1, Nq, D)
        seq = model.build_sequence([Turn("user", "Describe the video.", ("v",))], {"v": f_video[0]}, True)
        logits = model.llm(inputs_embeds=seq.inputs_embeds[None]).logits  # (1, L, V)
    return f_video, logits


def test_round_trip_gives_same_features_and_logits(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    first = load_checkpoint(tiny_checkpoint_dir)
    f_video, logits = outputs(first)
    saved = save_checkpoint(first, tmp_path / "copy", first.config)
    second = load_checkpoint(saved)
    f_video2, logits2 = outputs(second)
    assert torch.equal(f_video, f_video2)
    assert torch.equal(logits, logits2)
    assert second.config == read_config(tiny_checkpoint_dir)  # the config survives unchanged
    # Every part is loaded from the files, not re-initialised: a second load agrees too.
    for name, tensor in first.vision.clip.state_dict().items():
        assert torch.equal(tensor, second.vision.clip.state_dict()[name]), name


def test_checkpoint_config_is_self_describing(tiny_checkpoint_dir: Path) -> None:
    config = read_config(tiny_checkpoint_dir)
    assert config.vision.config_dir == "vision" and config.vision.weights
    assert (tiny_checkpoint_dir / config.vision.weights).is_file()
    assert (tiny_checkpoint_dir / config.llm.path / "config.json").is_file()
    assert (tiny_checkpoint_dir / config.lora.path / "adapter_config.json").is_file()
    assert (tiny_checkpoint_dir / ABSTRACTOR_FILE).is_file()
    assert config.fingerprint() == read_config(tiny_checkpoint_dir).fingerprint()


def _config_dict(directory: Path) -> dict:
    return json.loads((directory / CONFIG_FILE).read_text())


def _write_config(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(data))
    return directory


def test_unknown_top_level_key_is_named(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    data = _config_dict(tiny_checkpoint_dir) | {"visoin_tower": {}}
    with pytest.raises(CheckpointError, match=r"checkpoint: unknown key\(s\) \['visoin_tower'\]"):
        read_config(_write_config(tmp_path, data))


def test_unknown_nested_key_is_named(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    data = _config_dict(tiny_checkpoint_dir)
    data["abstractor"]["num_querys"] = 8
    with pytest.raises(CheckpointError, match=r"checkpoint\.abstractor: unknown key\(s\) \['num_querys'\]"):
        read_config(_write_config(tmp_path, data))


def test_missing_required_section_is_named(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    data = _config_dict(tiny_checkpoint_dir)
    del data["vision"]
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['vision'\]"):
        read_config(_write_config(tmp_path, data))


def test_missing_config_and_bad_json_and_bad_format(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=CONFIG_FILE):
        read_config(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON"):
        read_config(tmp_path)
    data = _config_dict(tiny_checkpoint_dir) | {"version": 99}
    with pytest.raises(CheckpointError, match="v99"):
        read_config(_write_config(tmp_path, data))
    data = _config_dict(tiny_checkpoint_dir)
    data["abstractor"] = [1, 2]
    with pytest.raises(CheckpointError, match=r"checkpoint\.abstractor: expected an object"):
        read_config(_write_config(tmp_path, data))


@pytest.fixture
def checkpoint_copy(tiny_checkpoint_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt"))


def test_missing_abstractor_weights_are_named(checkpoint_copy: Path) -> None:
    (checkpoint_copy / ABSTRACTOR_FILE).unlink()
    with pytest.raises(CheckpointError, match=ABSTRACTOR_FILE):
        load_checkpoint(checkpoint_copy)


def test_missing_lora_dir_is_named(checkpoint_copy: Path) -> None:
    shutil.rmtree(checkpoint_copy / "lora")
    with pytest.raises(CheckpointError, match=r"lora\.path: no directory at .*lora"):
        load_checkpoint(checkpoint_copy)


def test_missing_llm_dir_is_named(checkpoint_copy: Path) -> None:
    shutil.rmtree(checkpoint_copy / "llm")
    with pytest.raises(CheckpointError, match=r"llm\.path: no directory"):
        load_checkpoint(checkpoint_copy)


def test_abstractor_weights_that_do_not_fit_the_config_are_named(checkpoint_copy: Path) -> None:
    data = _config_dict(checkpoint_copy)
    data["abstractor"]["layers"] = 2  # the file holds one layer
    _write_config(checkpoint_copy, data)
    with pytest.raises(CheckpointError, match=rf"{ABSTRACTOR_FILE}: missing \[.*blocks\.1"):
        load_checkpoint(checkpoint_copy)


def test_embeddings_only_load_builds_the_same_prompt(tiny_checkpoint_dir, tiny_model) -> None:
    """The vLLM worker's light load: identical prompt embeddings, no LLM forward."""
    light = load_checkpoint(tiny_checkpoint_dir, llm_weights="embeddings")
    frames = torch.randint(0, 255, (1, 4, 32, 32, 3), dtype=torch.uint8)
    feats = {"v": tiny_model.encode_frames(frames)[0]}
    turns = (Turn("user", "what happens?", videos=("v",)),)
    with torch.inference_mode():
        assert torch.equal(light.prompt_embeds(turns, feats), tiny_model.prompt_embeds(turns, feats))
    assert sum(p.numel() for p in light.llm.parameters()) < sum(p.numel() for p in tiny_model.llm.parameters())
    with pytest.raises(RuntimeError, match="embeddings"):
        light.llm(input_ids=torch.tensor([[1]]))


def test_loading_logs_no_false_random_init_warning(
    checkpoint_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """open_clip says "initialized randomly" before our weights load; only a real lack of weights warns."""
    with caplog.at_level(logging.WARNING):
        load_checkpoint(checkpoint_copy)
    assert not [r for r in caplog.records if "random" in r.getMessage()]

    data = _config_dict(checkpoint_copy)
    data["vision"]["weights"] = None
    _write_config(checkpoint_copy, data)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_checkpoint(checkpoint_copy)
    assert [r for r in caplog.records if "no weights file: random initialisation" in r.getMessage()]


def test_loading_raises_no_library_future_warning(checkpoint_copy: Path) -> None:
    """PEFT's read of transformers' deprecated checkpointing flag is muted; other warnings are not."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(checkpoint_copy, trainable_lora=True)
        warnings.warn("a FutureWarning of our own still shows", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert messages == ["a FutureWarning of our own still shows"], messages
