"""`gpt4video` command line: one entry point for every process and tool.

Each command lives in its own module as `main(argv) -> int`; this file only routes,
importing the module when its command runs (so `gpt4video api` never imports torch).
"""

from __future__ import annotations

import importlib
import sys

from gpt4video.settings import SettingsError

# command words -> (module, help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("up",): ("gpt4video.up", "start api + llm-worker + t2v-worker locally (CPU, local default models)"),
    ("api",): ("app.main", "run the HTTP API"),
    ("llm-worker",): ("workers.llm_worker", "run an LLM worker (loads the checkpoint once)"),
    ("t2v-worker",): ("workers.t2v_worker", "run a text-to-video RQ worker"),
    ("healthcheck",): ("gpt4video.healthcheck", "exit 0 if this host's api / llm-worker / t2v-worker is healthy"),
    ("probe-video",): ("model.video.cli", "probe a video file (optionally isolated) and sample frames"),
    ("build-base",): ("model.bases", "convert a registry package's base LLM (GGUF) to transformers, once"),
    ("build-tiny",): ("model.tiny", "build a tiny random GPT4Video checkpoint"),
    ("build-tiny-t2v",): ("model.t2v.tiny", "build a tiny random diffusers text-to-video pipeline"),
    ("data", "shapes"): ("model.data.shapes", "generate the synthetic shapes video world"),
    ("data", "instructions"): ("model.data.instructions", "build instruction conversations from captions"),
    ("data", "text-dialogues"): ("model.data.text_dialogues", "shapes dialogues with videos given as text"),
    ("data", "chat"): ("model.data.chat", "everyday dialogues answered by the frozen base LLM (self-distillation)"),
    ("data", "binding"): ("model.data.binding", "two-object dialogues: shape by colour, colour by shape"),
    ("train", "stage0"): ("model.train.stage0", "pretrain the small vision tower and LLM (no pretrained weights)"),
    ("train", "init"): ("model.train.init", "a fresh checkpoint on a pretrained base LLM (before stage 1)"),
    ("train", "stage1"): ("model.train.stage1", "train the abstractor on video-caption pairs"),
    ("train", "stage2"): ("model.train.stage2", "train the LoRA (and abstractor) on instruction data"),
    ("train", "shapes-default"): ("model.train.recipe", "rebuild the shipped shapes checkpoint end to end"),
    ("train", "t2v"): ("model.t2v.train", "train a small diffusers text-to-video pipeline on shapes-world clips"),
    ("train-safety",): ("model.safety.train_text", "train the text moderation head"),
    ("build-safety-prompts",): ("model.safety.data.build_prompts", "regenerate the labelled moderation prompt set"),
    ("build-refusal-data",): ("model.safety.refusal_data", "write refusal conversations for training"),
    ("eval", "safety"): ("model.safety.eval_text", "precision/recall/F1 of the moderation head"),
    ("eval", "t2v"): ("model.t2v.eval", "render held-out captions with a t2v pipeline, judge them two ways"),
    ("eval", "refusal-margin"): ("model.eval.refusal_margin",
                                 "how sure a checkpoint is of refusing or answering each held-out prompt"),
    ("eval", "refusal-probe"): ("model.eval.refusal_probe",
                                "how far a linear read-out of the decision state separates harmful from everyday"),
    ("eval",): ("model.eval.shapes", "evaluate a checkpoint on held-out shapes videos"),
}


def usage() -> str:
    lines = ["usage: gpt4video COMMAND [ARGS...]", "", "commands:"]
    for words, (_, help_text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<22} {help_text}")
    lines.append("\n`gpt4video COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    for length in (2, 1):
        words = tuple(args[:length])
        if words in COMMANDS:
            module = importlib.import_module(COMMANDS[words][0])
            try:
                return int(module.main(args[length:]) or 0)
            except SettingsError as exc:  # fail fast, naming the bad setting, no traceback
                print(f"gpt4video {' '.join(words)}: {exc}", file=sys.stderr)
                return 2
    print(f"gpt4video: unknown command {' '.join(args[:2])!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
