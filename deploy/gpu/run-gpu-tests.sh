#!/usr/bin/env bash
# GPU tests of the CUDA kernels, run on a machine with an NVIDIA GPU, PyTorch and (optionally) no Java:
#   deploy/gpu/run-gpu-tests.sh BUNDLE OUT [check|bench|all]
# BUNDLE is what deploy/gpu/build-gpu-bundle.sh made: sparkmoe-cuda-check.jar (org.sparkmoe.cuda with the .so,
# and the tools module's check programs, org.sparkmoe.cuda.check), jre.tar.gz (a jlink-ed JRE, used when there
# is no java on the PATH) and these scripts. Writes logs and JSON to OUT; exits non-zero when a correctness
# check fails.
set -euo pipefail
BUNDLE=$(cd "${1:?bundle folder}" && pwd)
OUT=${2:?output folder}
WHAT=${3:-all}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -f "$BUNDLE/jre.tar.gz" ]; then
  mkdir -p /tmp/sparkmoe-jre && tar -xzf "$BUNDLE/jre.tar.gz" -C /tmp/sparkmoe-jre
  JAVA=/tmp/sparkmoe-jre/jre/bin/java
else
  JAVA=java
fi
CP="$BUNDLE/sparkmoe-cuda-check.jar"
# the element-wise kernels use the Vector API (conf/jvm.properties)
JAVA="$JAVA --add-modules=jdk.incubator.vector"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
if [ "$WHAT" = check ] || [ "$WHAT" = all ]; then
  DATA=$(mktemp -d)
  $JAVA -cp "$CP" org.sparkmoe.cuda.check.GpuCheck "$DATA" 42 2>&1 | tee "$OUT/check.log"
  python3 "$BUNDLE/check_against_torch.py" "$DATA" 2>&1 | tee -a "$OUT/check.log"
  # on Hopper the large products run on wgmma, 128 × 256 tiles only for groups of 1024+ rows: check those tiles
  # (forced) and the mma.sync path (sm_80's) too
  echo "--- again with SMK_WG_BN=256 (128 x 256 wgmma tiles)" | tee -a "$OUT/check.log"
  SMK_WG_BN=256 $JAVA -cp "$CP" org.sparkmoe.cuda.check.GpuCheck "$DATA" 44 2>&1 | tee -a "$OUT/check.log"
  python3 "$BUNDLE/check_against_torch.py" "$DATA" 2>&1 | tee -a "$OUT/check.log"
  echo "--- again with SMK_NO_WGMMA=1 (mma.sync forward)" | tee -a "$OUT/check.log"
  SMK_NO_WGMMA=1 $JAVA -cp "$CP" org.sparkmoe.cuda.check.GpuCheck "$DATA" 43 2>&1 | tee -a "$OUT/check.log"
  python3 "$BUNDLE/check_against_torch.py" "$DATA" 2>&1 | tee -a "$OUT/check.log"
  # the layer as executors drive it (ResidentExpertLayer: weights uploaded from bf16 bytes, activations converted
  # on the host) against the float64 reference layer
  echo "--- the resident expert layer against the float64 reference" | tee -a "$OUT/check.log"
  $JAVA -cp "$CP" org.sparkmoe.cuda.check.ExpertLayerCheck 7 2>&1 | tee -a "$OUT/check.log"
fi
if [ "$WHAT" = bench ] || [ "$WHAT" = all ]; then
  python3 "$BUNDLE/torch_moe_lora_bench.py" --json "$OUT/torch.json" 2>&1 | tee "$OUT/bench.log"
  SMK_PROFILE=1 $JAVA -cp "$CP" org.sparkmoe.cuda.check.GpuBench "$OUT/ours.json" 2>&1 | tee -a "$OUT/bench.log"
  python3 "$BUNDLE/gpu_table.py" "$OUT/torch.json" "$OUT/ours.json" 2>&1 | tee "$OUT/table.md"
fi
