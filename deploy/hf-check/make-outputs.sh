#!/usr/bin/env bash
# Builds the checkpoints and adapters that check_transformers_load.py loads with transformers and PEFT,
# together with SparkMoE's own logits for each, into one folder (default .hfcheck/ at the repository root).
# Runs on this machine (Java); the Python check runs wherever transformers is installed.
#   deploy/hf-check/make-outputs.sh [OUT]
# MODEL (default the bundled Mixtral) may name another model folder with vocab ≥ 1024 and 64 positions, e.g.
# tests/src/test/resources/reference/qwen3-moe-tiny or olmoe-tiny; RESCALE (default measured) is topk's --rescale
# (none for a model with norm_topk_prob false, such as olmoe-tiny), WINDOW (default 256) calibrate's --window
# (64 for those fixtures). Besides topk3, dense, reduce4, adapter and adapter-fused (train --adapter-format
# fused), it writes fused2: topk to 2 experts with
# --layout fused (transformers 5's fused expert tensors).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/.hfcheck}"
SPARKMOE="$ROOT/deploy/bin/sparkmoe"
MODEL="${MODEL:-$ROOT/examples/models/mixtral-tiny}"
RESCALE="${RESCALE:-measured}"
WINDOW="${WINDOW:-256}"
IDS="$ROOT/deploy/hf-check/input_ids.safetensors"   # [2,64] int64: the first two rows of the parity fixture
CORPUS="$ROOT/examples/corpus"
DATA="$CORPUS/fortunes.txt,$CORPUS/manuals.txt,$CORPUS/scripture.txt,$CORPUS/sysadmin.txt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

[ ! -e "$OUT" ] || { echo "make-outputs: $OUT exists; remove it first" >&2; exit 1; }
mkdir -p "$OUT"
STATS="$WORK/calib/router-stats.json"
"$SPARKMOE" calibrate --model "$MODEL" --data "$DATA" --split valid --window "$WINDOW" --max-tokens-per-file 3000 \
  --out "$WORK/calib"

"$SPARKMOE" surgery topk --model "$MODEL" --top-k 3 --rescale "$RESCALE" --stats "$STATS" --out "$OUT/topk3"
"$SPARKMOE" surgery topk --model "$MODEL" --top-k 2 --rescale none --layout fused --out "$OUT/fused2"
"$SPARKMOE" surgery merge-dense --model "$MODEL" --method router-weighted --top-k-mask 2 --stats "$STATS" \
  --out "$OUT/dense"
"$SPARKMOE" surgery reduce --model "$MODEL" --experts 4 --by weights --stats "$STATS" --out "$OUT/reduce4"
"$SPARKMOE" train --model "$MODEL" --data "$CORPUS/sysadmin.txt" --split valid --steps 4 --window 64 \
  --batch-windows 2 --lr 3e-3 --rank 4 --alpha 8 --train-router --out "$WORK/train"
cp -r "$WORK/train/adapter" "$OUT/adapter"
# the same training, its adapter written as PEFT's fused-expert adapter (target_parameters, rank 2r)
"$SPARKMOE" train --model "$MODEL" --data "$CORPUS/sysadmin.txt" --split valid --steps 4 --window 64 \
  --batch-windows 2 --lr 3e-3 --rank 4 --alpha 8 --train-router --adapter-format fused --out "$WORK/train-fused"
cp -r "$WORK/train-fused/adapter" "$OUT/adapter-fused"

# SparkMoE's logits: the base model with the adapter, and each surgery output.
"$SPARKMOE" logits --model "$MODEL" --adapter "$OUT/adapter" --input-ids "$IDS" --out "$OUT/adapter.logits.safetensors"
"$SPARKMOE" logits --model "$MODEL" --adapter "$OUT/adapter-fused" --input-ids "$IDS" \
  --out "$OUT/adapter-fused.logits.safetensors"
for m in topk3 dense reduce4 fused2; do
  "$SPARKMOE" logits --model "$OUT/$m" --input-ids "$IDS" --out "$OUT/$m.logits.safetensors"
done
cp "$IDS" "$OUT/input_ids.safetensors"
du -sh "$OUT"
