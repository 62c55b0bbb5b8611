#!/bin/bash
# The validation runs behind the `standard` profile's settings (README, "The standard profile"):
# anchor-only at two learning rates, then ACE-Align's causal stage at two learning rates. Every
# number they give is on the split's *validation* questions (learning curves, eval.curve_every).
#
#   . .venv/bin/activate && bash scripts/standard_validation_runs.sh [OUT]
#                                            (default runs/std-sweep; ~45 min on 2 cores)
#
# The ACE-Align runs start from the anchor-only run's end-of-epoch-1 checkpoint instead of training
# the anchor stage again: with the same seed, the same pairs and a constant LR, ACE-Align's first
# stage *is* that run's first epoch, and its second stage starts a fresh optimizer either way.
# The joint method's beta and the quick profile's sampling come from other runs (README).
set -euo pipefail
S=${1:-runs/std-sweep}
mkdir -p "$S"
# The standard (and quick) profile's split: same countries, fractions, seed and held-out combinations.
[ -f "$S/split.json" ] || python - "$S/split.json" <<'PY'
import sys
from pathlib import Path
from acealign.pipeline import PROFILES, make_split
from acealign.survey import load_survey
prof = PROFILES["standard"]
make_split(load_survey(None).subset(countries=prof.countries), prof, Path(sys.argv[1]))
PY
COMMON=(--split "$S/split.json" --max-pairs 768 --set data.group_by_question=false
        --set train.batch_size=32 --set model.dtype='"bfloat16"' --set model.template='"paper-question-first"'
        --set eval.curve_every=6 --set train.checkpoint_every=12 --set train.keep_checkpoints=8
        --set lora.top_layers=4)

anchor() {  # NAME LR
    local resume=()
    [ -f "$S/train/$1/adapter/adapter_config.json" ] && return
    [ -d "$S/train/$1/checkpoints" ] && resume=(--resume)
    acealign train --method anchor "${COMMON[@]}" --set optim.lr="$2" --out "$S/train/$1" "${resume[@]}"
}

branch() {  # FROM NAME LR CAUSAL_LR: ace continuing FROM's checkpoint at the end of epoch 1
    local from=$1 name=$2 lr=$3 clr=$4 d="$S/train/$2" step ck
    [ -f "$d/adapter/adapter_config.json" ] && return
    rm -rf "$d"
    # the last step of epoch 1 in FROM's log (768 pairs / 32 per step = 24)
    step=$(python -c 'import json,sys; print(max(r["step"] for r in map(json.loads, open(sys.argv[1])) if r.get("epoch") == 1 and "loss" in r))' "$S/train/$from/log.jsonl")
    ck=$(printf "step-%08d" "$step")
    [ -d "$S/train/$from/checkpoints/$ck" ] || { echo "no checkpoint $ck in $from" >&2; exit 1; }
    mkdir -p "$d/checkpoints"
    cp -r "$S/train/$from/checkpoints/$ck" "$d/checkpoints/"
    echo "{\"checkpoint\": \"$ck\"}" > "$d/checkpoints/latest.json"
    python - "$S/train/$from" "$d" "$step" "$clr" <<'PY'
import json, sys
from acealign.train import resolve_config
src, dst, step, clr = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with open(f"{src}/log.jsonl") as f, open(f"{dst}/log.jsonl", "w") as g:
    g.writelines(line for line in f if json.loads(line).get("step", 0) <= step)
cfg = json.load(open(f"{src}/config.json"))
cfg.update(method="ace")
cfg["optim"]["causal_lr"] = clr
cfg["methods"] = resolve_config(None)["methods"]
json.dump(cfg, open(f"{dst}/config.json", "w"), indent=2)
PY
    acealign train --method ace "${COMMON[@]}" --set optim.lr="$lr" --set optim.causal_lr="$clr" \
        --out "$d" --resume
}

anchor a-top4-lr1e-3 1e-3
anchor a-top4-lr3e-4 3e-4
branch a-top4-lr1e-3 ace-lr1e-3-c1e-3 1e-3 1e-3
branch a-top4-lr1e-3 ace-lr1e-3-c1e-4 1e-3 1e-4
# The curves (validation S x100, validation d_CDF x1000) of every run, as the README shows them.
python - "$S" <<'PY'
import sys
from acealign.report.tables import learning_curves
curves, _ = learning_curves(sys.argv[1])
print(curves.round(1).to_string(index=False))
PY
