#!/usr/bin/env bash
# Serve recops bentos on a GPU and benchmark them against a bare BentoML echo service.
#
# Run from a checkout on a machine with CUDA and recops installed (`make install`):
#   bash infra/gpu/serve_bench.sh                  # cuda, tiny + Beauty-sized catalogue
#   DEVICE=cpu DURATION=3 bash infra/gpu/serve_bench.sh   # the same on CPU (dry run)
#   SCORER=traced bash infra/gpu/serve_bench.sh    # serve.scorer (onnx is CPU only: on
#                                                  # cuda it falls back to the trace)
# For each catalogue size it builds a bento of an untrained SASRec (configs/models/sasrec
# sizes) in a scratch workspace, serves it with serve.device=$DEVICE, measures it and the
# echo service back to back at concurrency 1/8/32 with wrk (installed best effort), and
# writes $OUT_DIR/serving-$DEVICE.json plus the printed table ($OUT_DIR/serving-$DEVICE.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."

DEVICE="${DEVICE:-cuda}"
ITEMS="${ITEMS:-40 12101}"
DURATION="${DURATION:-8}"
OUT_DIR="${OUT_DIR:-./bench-results}"
SCORER="${SCORER:-}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
[ -x .venv/bin/python ] && PYTHON="${PYTHON_OVERRIDE:-.venv/bin/python}"
mkdir -p "$OUT_DIR"

if [ "$DEVICE" = "cuda" ]; then
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device: run with DEVICE=cpu or install a CUDA build of torch")'
fi
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  ( $SUDO apt-get install -y -qq wrk || ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk) ) >/dev/null 2>&1 \
    || echo "serve_bench: wrk not installable here; the benchmark falls back to its Python load generator"
fi

args=()
for n in $ITEMS; do args+=(--items "$n"); done
[ -n "$SCORER" ] && args+=(--scorer "$SCORER")
"$PYTHON" -c 'from flows.cli.app import main; main()' bench serving "${args[@]}" \
  --device "$DEVICE" --duration "$DURATION" --json "$OUT_DIR/serving-$DEVICE.json" \
  | tee "$OUT_DIR/serving-$DEVICE.txt"
echo "serve_bench: wrote $OUT_DIR/serving-$DEVICE.json"
