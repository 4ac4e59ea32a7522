"""Self-describing checkpoint directories: what they contain, loading and saving.

    <dir>/gpt4video.json          CheckpointConfig (below); unknown or missing keys fail
    <dir>/abstractor.safetensors  VideoAbstractor weights
    <dir>/vision/                 open_clip_config.json + open_clip_model.safetensors (custom
                                  towers; a real ViT-L/14 is named + a weights path instead)
    <dir>/llm/                    transformers causal LM + tokenizer (save_pretrained)
    <dir>/lora/                   PEFT LoRA adapter (adapter_config.json + safetensors)

Relative paths in the config resolve against the checkpoint directory; absolute paths
point at weights kept elsewhere (e.g. a LLaMA-7B on a shared disk).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from safetensors.torch import load_file, save_file

from model.abstractor import AbstractorConfig, VideoAbstractor
from model.bases import BaseModelError, resolve_base
from model.llm import (
    LLMConfig,
    LoRASettings,
    base_state_dict,
    load_base_llm,
    load_embedding_table,
    load_lora,
)
from model.network import GPT4VideoModel
from model.prompt import PromptConfig
from model.vision import FrameEncoder, VisionConfig, create_clip

log = logging.getLogger(__name__)

CONFIG_FILE = "gpt4video.json"
ABSTRACTOR_FILE = "abstractor.safetensors"
FORMAT = "gpt4video-checkpoint"
# v2: the prompt is the base LLM's own chat template (v1 had its own USER:/ASSISTANT: markers).
VERSION = 2


class CheckpointError(ValueError):
    """The checkpoint directory is incomplete or its config is invalid; the message says which."""


@dataclass(frozen=True)
class GenerationDefaults:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass(frozen=True)
class CheckpointConfig:
    vision: VisionConfig
    abstractor: AbstractorConfig
    llm: LLMConfig = LLMConfig()
    lora: LoRASettings = LoRASettings()
    prompt: PromptConfig = PromptConfig()
    generation: GenerationDefaults = GenerationDefaults()
    format: str = FORMAT
    version: int = VERSION
    # Free-form provenance (how it was built or trained); not interpreted.
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def fingerprint(self) -> str:
        """Identifies the video-encoding path (vision + abstractor config), for feature caches."""
        key = json.dumps({"vision": asdict(self.vision), "abstractor": asdict(self.abstractor)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


T = TypeVar("T")


def _from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build a config dataclass, naming unknown and missing keys."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
    missing = sorted(
        name for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise CheckpointError(f"{where}: missing key(s) {missing}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def _read_json(directory: Path) -> tuple[Path, dict]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a GPT4Video checkpoint: {CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return path, data


def read_config(directory: Path) -> CheckpointConfig:
    path, data = _read_json(directory)
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: format {data.get('format')!r} v{data.get('version')} is not {FORMAT!r} v{VERSION}"
            + ("; v1 checkpoints used their own USER:/ASSISTANT: prompt markers, retrain on v2 (the base "
               "LLM's chat template), or take only their vision tower with `gpt4video train init --vision-from`"
               if data.get("version") == 1 else "")
        )
    return _from_dict(CheckpointConfig, data, "checkpoint")


def read_vision_config(directory: Path) -> VisionConfig:
    """Only the vision section, from a checkpoint of any version (to reuse its tower)."""
    path, data = _read_json(directory)
    return _from_dict(VisionConfig, data.get("vision"), f"{path}: vision")


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def llm_directory(root: Path, llm: LLMConfig, bases_dir: Path | None = None) -> Path:
    """Where the base LLM of a checkpoint lives: its own directory, or a named base's build."""
    if llm.base is not None:
        try:
            return resolve_base(llm.base, llm.base_sha256, bases_dir)
        except BaseModelError as exc:
            raise CheckpointError(f"llm.base: {exc}") from exc
    assert llm.path is not None  # LLMConfig requires one of the two
    path = _resolve(root, llm.path)
    if not path.is_dir():
        raise CheckpointError(f"llm.path: no directory at {path}")
    return path


def load_checkpoint(
    directory: str | Path, device: str = "cpu", trainable_lora: bool = False, llm_weights: str = "full",
    bases_dir: Path | None = None,
) -> GPT4VideoModel:
    """Validate and load a checkpoint. Everything comes from local paths.

    `llm_weights="embeddings"` loads only the LLM's input embedding table (for the vLLM
    engine, which holds the LLM itself): the model can build prompt embeddings but not run
    the LLM.
    """
    if llm_weights not in {"full", "embeddings"}:
        raise ValueError(f"llm_weights must be 'full' or 'embeddings', got {llm_weights!r}")
    root = Path(directory)
    config = read_config(root)
    llm_dir = llm_directory(root, config.llm, bases_dir)
    if not _resolve(root, config.lora.path).is_dir():
        raise CheckpointError(f"lora.path: no directory at {_resolve(root, config.lora.path)}")
    abstractor_file = root / ABSTRACTOR_FILE
    if not abstractor_file.is_file():
        raise CheckpointError(f"{ABSTRACTOR_FILE} is missing from {root}")

    clip = create_clip(config.vision, root, device=device)
    vision = FrameEncoder(clip, config.vision)
    abstractor = VideoAbstractor(config.abstractor)
    state = load_file(str(abstractor_file))
    missing, unexpected = abstractor.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ABSTRACTOR_FILE}: missing {missing}, unexpected {unexpected}")
    abstractor.to(device)

    if llm_weights == "embeddings":
        llm, tokenizer = load_embedding_table(llm_dir, config.llm.dtype, device)
    else:
        base, tokenizer = load_base_llm(llm_dir, config.llm.dtype, device)
        llm = load_lora(base, _resolve(root, config.lora.path), trainable=trainable_lora)
    model = GPT4VideoModel(vision, abstractor, llm, tokenizer, config.prompt)
    model.config = config  # type: ignore[assignment]
    model.checkpoint_dir = root  # type: ignore[assignment]
    model.llm_dir = llm_dir  # type: ignore[assignment]
    model.eval()
    log.info("loaded checkpoint %s (%d video tokens)", root, config.abstractor.num_tokens)
    return model


def save_checkpoint(
    model: GPT4VideoModel, directory: str | Path, config: CheckpointConfig, save_base_llm: bool = True
) -> Path:
    """Write `model` in the exact format `load_checkpoint` reads.

    The vision tower is written as a local open_clip config + weights unless the config
    points at an absolute weights path (a real tower kept elsewhere); the base LLM is
    written unless `save_base_llm` is False and the config points elsewhere.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.abstractor.state_dict().items()},
              str(root / ABSTRACTOR_FILE))

    vision_cfg = config.vision
    if vision_cfg.config_dir is not None:
        vdir = root / vision_cfg.config_dir
        vdir.mkdir(parents=True, exist_ok=True)
        clip_cfg = getattr(model.vision.clip, "g4v_open_clip_config", None)
        if clip_cfg is None:
            raise CheckpointError("the vision tower carries no open_clip config to save")
        (vdir / "open_clip_config.json").write_text(json.dumps(clip_cfg, indent=2))
        weights = vdir / "open_clip_model.safetensors"
        save_file({k: v.detach().contiguous().cpu() for k, v in model.vision.clip.state_dict().items()},
                  str(weights))
        vision_cfg = dataclasses.replace(vision_cfg, weights=str(weights.relative_to(root)))

    if save_base_llm and config.llm.base is None:  # a named base comes from its registry package
        assert config.llm.path is not None
        llm_dir = _resolve(root, config.llm.path)
        base = model.llm.get_base_model()
        base.save_pretrained(llm_dir, state_dict=base_state_dict(model.llm))
        model.tokenizer.save_pretrained(llm_dir)
    lora_dir = _resolve(root, config.lora.path)
    if lora_dir.exists():
        shutil.rmtree(lora_dir)
    model.llm.save_pretrained(lora_dir)

    config = dataclasses.replace(config, vision=vision_cfg)
    (root / CONFIG_FILE).write_text(config.to_json())
    model.config = config  # type: ignore[assignment]
    return root

