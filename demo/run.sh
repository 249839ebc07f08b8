#!/usr/bin/env bash
# The embedded default of `make demo`: a local hub (olah over a generated tiny model and dataset),
# a preload from RunPod-style env vars, and the demo service started on the cache, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${DEMO_DIR:-$PWD/demo-run}"
mkdir -p "$work"

python -m localhub serve --root "$work/hub" > "$work/hub.out" 2> "$work/hub.log" &
hub_pid=$!
trap 'kill "$hub_pid" 2>/dev/null; wait "$hub_pid" 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  grep -q "serving" "$work/hub.out" 2>/dev/null && break
  kill -0 "$hub_pid" 2>/dev/null || { cat "$work/hub.log" >&2; exit 1; }
  sleep 0.1
done
url=$(sed -n 's/^localhub: serving //p' "$work/hub.out")
echo "demo: local hub at $url (olah, offline mode, serving $work/hub/mirrors)" >&2

export HF_ENDPOINT="$url"
export RUNPOD_HUGGINGFACE_MODEL="org/tiny-model, org/tiny-model:dev"
export RUNPOD_HUGGINGFACE_DATASET="org/tiny-data:v1.0"
export PRELOADER_CACHE_DIR="$work/volume/hub"
echo "demo: RUNPOD_HUGGINGFACE_MODEL=\"$RUNPOD_HUGGINGFACE_MODEL\" RUNPOD_HUGGINGFACE_DATASET=\"$RUNPOD_HUGGINGFACE_DATASET\"" >&2
echo "demo: the cache is $PRELOADER_CACHE_DIR; look at it afterwards with:" >&2
echo "demo:   .venv/bin/preloader ls --cache-dir $PRELOADER_CACHE_DIR" >&2
echo "demo: preloader run -- python demo/service.py" >&2
preloader run -- python demo/service.py --pretty
