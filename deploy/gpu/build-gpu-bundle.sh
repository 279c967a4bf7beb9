#!/usr/bin/env bash
# Builds what the GPU tests need on a machine with nvcc and a JDK 17 (no GPU needed) into BUNDLE (default .gpu):
# the executors classes with the CUDA library (mvn -Pcuda-kernels) and the check programs of the tools module
# (org.sparkmoe.cuda.check), one small jar of org.sparkmoe.cuda (no ND4J: the GPU machine needs no other jar),
# a jlink-ed JRE and the scripts of deploy/gpu. Then, on the GPU machine:
#   BUNDLE/run-gpu-tests.sh BUNDLE OUT
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$(mkdir -p "${1:-$ROOT/.gpu}" && cd "${1:-$ROOT/.gpu}" && pwd)
JDK=${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}
cd "$ROOT"
mvn -q -B -o -pl tools -am -Pcuda-kernels compile
CLASSES=executors/target/classes
TOOLS=tools/target/classes
# executors' org/sparkmoe/cuda first, then the check programs (an update: a stale cuda/check left in
# executors/target by a build from before the tools module is replaced, not duplicated)
"$JDK/bin/jar" --create --file "$BUNDLE/sparkmoe-cuda-check.jar" -C "$CLASSES" org/sparkmoe/cuda \
  -C "$CLASSES" org/sparkmoe/routing/RoutingPlan.class -C "$CLASSES" native
"$JDK/bin/jar" --update --file "$BUNDLE/sparkmoe-cuda-check.jar" -C "$TOOLS" org/sparkmoe/cuda/check
if [ ! -f "$BUNDLE/jre.tar.gz" ]; then
  rm -rf /tmp/sparkmoe-jlink && mkdir -p /tmp/sparkmoe-jlink
  "$JDK/bin/jlink" --add-modules java.base,jdk.unsupported,java.logging,java.management,jdk.incubator.vector --strip-debug \
    --no-header-files --no-man-pages --compress=2 --output /tmp/sparkmoe-jlink/jre
  tar -czf "$BUNDLE/jre.tar.gz" -C /tmp/sparkmoe-jlink jre
fi
cp deploy/gpu/run-gpu-tests.sh deploy/gpu/check_against_torch.py deploy/gpu/gpu_table.py \
  deploy/gpu/torch_moe_lora_bench.py "$BUNDLE/"
du -sh "$BUNDLE"/*
