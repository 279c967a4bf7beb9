#!/usr/bin/env bash
# adapter-steps.sh: train step times of LoRA against μMoE adapters at about equal trainable parameters on the bundled
# tiny Mixtral (docs/benchmarks.md, "train: μMoE adapters against LoRA"), the runs interleaved: every variant once in
# order, then once in reverse order, so drift in the machine's speed falls on all of them alike. Each run is
# `sparkmoe train` of STEPS steps (default 4) of 4 windows of 256 per partition on 2 partitions (embedded local[2]);
# its train-log.jsonl gives per round the tokens/s per partition in the local steps and the round's seconds. Prints
# per variant and pass the median over rounds 2..STEPS (round 1 includes the model lease and the kernels' warm-up),
# then the median of the two passes.
#
#   deploy/bench/adapter-steps.sh [OUT]        (OUT default out/bench-adapter-steps)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$(realpath -m "${1:-$root/out/bench-adapter-steps}")"
steps="${STEPS:-4}"
rm -rf "$out"; mkdir -p "$out"
common=(--model "$root/examples/models/mixtral-tiny" --data "$root/examples/corpus/sysadmin.txt" --split valid
        --steps "$steps" --window 256 --batch-windows 4 --lr 3e-3 --checkpoint-every 100 --partitions 2)
names=(lora cp64 tr64 cp512 tr512 cp64x64 tr4096)
declare -A args=(
  [lora]="--rank 16 --alpha 32"
  [cp64]="--adapter mumoe-cp --mumoe-experts 64 --mumoe-rank 435 --mumoe-targets moe"
  [tr64]="--adapter mumoe-tr --mumoe-experts 64 --mumoe-rank 21,21,21 --mumoe-targets moe"
  [cp512]="--adapter mumoe-cp --mumoe-experts 512 --mumoe-rank 107 --mumoe-targets moe"
  [tr512]="--adapter mumoe-tr --mumoe-experts 512 --mumoe-rank 10,10,10 --mumoe-targets moe"
  [cp64x64]="--adapter mumoe-cp --mumoe-experts 64,64 --mumoe-rank 341 --mumoe-targets moe"
  [tr4096]="--adapter mumoe-tr --mumoe-experts 4096 --mumoe-rank 1,1,1 --mumoe-targets moe"
)
order=("${names[@]}")
for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[i]}"); done
declare -A pass=()
for name in "${order[@]}"; do
  p=$(( ${pass[$name]:-0} + 1 )); pass[$name]=$p
  run="$out/$name-$p"
  # shellcheck disable=SC2086
  "$root/deploy/bin/sparkmoe" train "${common[@]}" ${args[$name]} --out "$run" >"$run.log" 2>&1 \
    || { echo "adapter-steps.sh: $name failed, see $run.log" >&2; exit 1; }
  echo "$name pass $p: $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
python3 - "$out" "$steps" "${names[@]}" <<'PY'
import json, statistics, sys
out, steps, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"{'variant':10} {'pass':>4} {'tok/s/partition':>16} {'round s':>8}  (median of rounds 2..{steps})")
for name in names:
    rates, secs = [], []
    for p in (1, 2):
        rows = [json.loads(l) for l in open(f"{out}/{name}-{p}/train-log.jsonl")][1:]
        rate = statistics.median(r["tokens_per_s_per_partition"] for r in rows)
        sec = statistics.median(r["round_s"] for r in rows)
        rates.append(rate); secs.append(sec)
        print(f"{name:10} {p:>4} {rate:16.1f} {sec:8.2f}")
    print(f"{name:10} {'both':>4} {statistics.median(rates):16.1f} {statistics.median(secs):8.2f}")
PY
