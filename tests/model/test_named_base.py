"""Checkpoints that name their base LLM (`llm.base`) instead of carrying it in `llm/`.

The base directory here is a fake one: the tiny checkpoint's own `llm/` copied under
`<bases>/smollm2-135m-instruct/` with a `gpt4video-base.json` marker. `build_base` (the
real GGUF conversion) is not run here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.bases import MARKER, BaseModelError, known_bases, resolve_base
from model.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    llm_directory,
    load_checkpoint,
    read_config,
    read_vision_config,
    save_checkpoint,
)
from model.engine.base import Turn
from model.llm import LLMConfig
from model.network import GPT4VideoModel
from tests.frames import seeded_frames

BASE = "smollm2-135m-instruct"


def registry_sha() -> str:
    return known_bases()[BASE].gguf_sha256


def outputs(model: GPT4VideoModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F_video for fixed frames, the prompt embeddings carrying it, and their logits."""
    frames = torch.from_numpy(seeded_frames("named-base", 3, model.vision.cfg.image_size))[None]
    with torch.no_grad():
        f_video = model.encode_frames(frames)
        seq = model.build_sequence([Turn("user", "Describe the video.", ("v",))], {"v": f_video[0]}, True)
        logits = model.llm(inputs_embeds=seq.inputs_embeds[None]).logits
    return f_video, seq.inputs_embeds, logits


def make_bases(tiny_checkpoint_dir: Path, root: Path, sha: str | None = None, name: str = BASE) -> Path:
    bases = root / "bases"
    shutil.copytree(tiny_checkpoint_dir / "llm", bases / name)
    (bases / name / MARKER).write_text(json.dumps({"name": name, "gguf_sha256": sha or registry_sha()}))
    return bases


def make_named_checkpoint(tiny_checkpoint_dir: Path, root: Path, base: str = BASE, sha: str | None = None) -> Path:
    ckpt = root / "named"
    shutil.copytree(tiny_checkpoint_dir, ckpt)
    data = json.loads((ckpt / CONFIG_FILE).read_text())
    data["llm"] = {"path": None, "base": base, "base_sha256": sha or registry_sha(), "dtype": "float32"}
    (ckpt / CONFIG_FILE).write_text(json.dumps(data))
    shutil.rmtree(ckpt / "llm")
    return ckpt


@pytest.fixture
def named(tiny_checkpoint_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(checkpoint naming the base, bases directory holding it)."""
    return make_named_checkpoint(tiny_checkpoint_dir, tmp_path), make_bases(tiny_checkpoint_dir, tmp_path)


def test_registry_lists_the_default_base() -> None:
    spec = known_bases()[BASE]
    assert len(spec.gguf_sha256) == 64 and int(spec.gguf_sha256, 16) >= 0
    assert spec.gguf.endswith(".gguf")


def test_named_base_loads_and_matches_the_carried_base(named: tuple[Path, Path], tiny_model) -> None:
    ckpt, bases = named
    assert not (ckpt / "llm").exists()
    config = read_config(ckpt)
    assert config.llm.path is None and config.llm.base == BASE
    assert llm_directory(ckpt, config.llm, bases) == bases / BASE
    model = load_checkpoint(ckpt, bases_dir=bases)
    f_video, embeds, logits = outputs(model)
    f_ref, embeds_ref, logits_ref = outputs(tiny_model)
    assert torch.equal(f_video, f_ref)
    assert torch.equal(embeds, embeds_ref)
    assert torch.equal(logits, logits_ref)


def test_named_base_found_under_data_dir(tiny_checkpoint_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `bases_dir`, the base is looked up under DATA_DIR/models/bases."""
    ckpt = make_named_checkpoint(tiny_checkpoint_dir, tmp_path)
    bases = make_bases(tiny_checkpoint_dir, tmp_path / "data" / "models")
    for explicit in ("BASES_DIR", "GPT4VIDEO_BASES_DIR"):
        monkeypatch.delenv(explicit, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert resolve_base(BASE, registry_sha()) == bases / BASE
    model = load_checkpoint(ckpt, llm_weights="embeddings")
    assert model.config.llm.base == BASE


def test_missing_base_says_which_command_builds_it(named: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = named
    with pytest.raises(CheckpointError, match=r"gpt4video build-base smollm2-135m-instruct"):
        load_checkpoint(ckpt, bases_dir=tmp_path / "empty-bases")


def test_base_built_from_another_gguf_asks_for_force(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    ckpt = make_named_checkpoint(tiny_checkpoint_dir, tmp_path)
    bases = make_bases(tiny_checkpoint_dir, tmp_path, sha="0" * 64)
    with pytest.raises(CheckpointError, match=r"--force"):
        load_checkpoint(ckpt, bases_dir=bases)


def test_checkpoint_sha_other_than_the_built_base_fails(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    ckpt = make_named_checkpoint(tiny_checkpoint_dir, tmp_path, sha="f" * 64)
    bases = make_bases(tiny_checkpoint_dir, tmp_path)  # built from the registry's GGUF
    with pytest.raises(CheckpointError, match=r"--force"):
        load_checkpoint(ckpt, bases_dir=bases)


def test_unknown_base_name_fails(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    ckpt = make_named_checkpoint(tiny_checkpoint_dir, tmp_path, base="no-such-base")
    bases = make_bases(tiny_checkpoint_dir, tmp_path, name="no-such-base")  # even when a dir exists
    with pytest.raises(CheckpointError, match=r"unknown base LLM 'no-such-base'"):
        load_checkpoint(ckpt, bases_dir=bases)
    with pytest.raises(BaseModelError, match=r"unknown base LLM"):
        resolve_base("no-such-base", None, bases)


def test_unreadable_marker_counts_as_not_built(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    bases = make_bases(tiny_checkpoint_dir, tmp_path)
    (bases / BASE / MARKER).write_text("{not json")
    with pytest.raises(BaseModelError, match=r"build-base"):
        resolve_base(BASE, registry_sha(), bases)


def test_llm_config_needs_exactly_one_of_path_and_base() -> None:
    with pytest.raises(ValueError, match=r"exactly one"):
        LLMConfig(path=None, base=None)
    with pytest.raises(ValueError, match=r"exactly one"):
        LLMConfig(path="llm", base=BASE)
    assert LLMConfig().path == "llm"
    assert LLMConfig(path=None, base=BASE).base == BASE


def test_config_with_both_path_and_base_is_a_checkpoint_error(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_checkpoint_dir / CONFIG_FILE).read_text())
    data["llm"] = {"path": "llm", "base": BASE, "base_sha256": registry_sha(), "dtype": "float32"}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"exactly one"):
        read_config(tmp_path)


def test_saving_a_named_base_model_writes_no_llm_dir(named: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, bases = named
    model = load_checkpoint(ckpt, bases_dir=bases)
    out = save_checkpoint(model, tmp_path / "saved", model.config)
    assert not (out / "llm").exists()
    assert (out / "lora" / "adapter_config.json").is_file()
    assert read_config(out).llm == read_config(ckpt).llm
    again = load_checkpoint(out, bases_dir=bases)
    assert torch.equal(outputs(again)[2], outputs(model)[2])


def test_v1_checkpoint_is_refused_but_its_vision_section_reads(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_checkpoint_dir / CONFIG_FILE).read_text())
    data["version"] = 1
    (tmp_path / CONFIG_FILE).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"v2"):
        read_config(tmp_path)
    assert read_vision_config(tmp_path) == read_config(tiny_checkpoint_dir).vision
