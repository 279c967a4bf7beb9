#!/usr/bin/env bash
# Spark GPU discovery script (spark.{executor,worker,driver}.resource.gpu.discoveryScript): prints the
# GPUs this process may use as Spark's ResourceInformation JSON, e.g.
#   {"name": "gpu", "addresses": ["0", "1"]}
# The addresses are nvidia-smi's indices, restricted to CUDA_VISIBLE_DEVICES when that is set. On
# Kubernetes the NVIDIA device plugin exposes only the pod's own GPUs (NVIDIA_VISIBLE_DEVICES), and
# nvidia-smi inside the pod lists just those, numbered from 0.
# Exit status: 0 with the JSON on stdout; 1 with a one-line reason on stderr when no GPU can be listed,
# which makes the executor fail at start instead of running without its GPU.
set -euo pipefail

command -v nvidia-smi >/dev/null 2>&1 || { echo "getGpusResources: nvidia-smi not found" >&2; exit 1; }
indices="$(nvidia-smi --query-gpu=index --format=csv,noheader)" \
  || { echo "getGpusResources: nvidia-smi failed" >&2; exit 1; }

addresses=()
case "${CUDA_VISIBLE_DEVICES-unset}" in
  "" | void | none | NoDevFiles) echo "getGpusResources: CUDA_VISIBLE_DEVICES hides every GPU" >&2; exit 1 ;;
esac
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  # CUDA numbers the visible devices 0..n-1 in the order given; those are the addresses to hand out.
  IFS=',' read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
  for ((i = 0; i < ${#visible[@]}; i++)); do addresses+=("$i"); done
else
  while read -r index; do
    [ -z "$index" ] || addresses+=("$index")
  done <<< "$indices"
fi
[ "${#addresses[@]}" -gt 0 ] || { echo "getGpusResources: no GPU found" >&2; exit 1; }

json=""
for a in "${addresses[@]}"; do json="${json:+$json, }\"$a\""; done
echo "{\"name\": \"gpu\", \"addresses\": [$json]}"
