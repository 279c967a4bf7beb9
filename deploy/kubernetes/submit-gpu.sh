#!/usr/bin/env bash
# Runs one sparkmoe command on Kubernetes in cluster deploy mode with GPU executors:
#
#   SPARK_HOME=/opt/spark K8S_API=https://<api-server>:6443 IMAGE=<registry>/sparkmoe-gpu:0.1.0 \
#     deploy/kubernetes/submit-gpu.sh <command> [options]
#
# e.g.
#   deploy/kubernetes/submit-gpu.sh train --model /data/models/mixtral-tiny \
#     --data /data/corpus/sysadmin.txt --steps 100 --partitions 2 --out /data/runs/sysadmin
#
# IMAGE is built from deploy/kubernetes/Dockerfile (the -Pcuda-kernels assembly at /opt/sparkmoe); the pods
# run it with the templates beside this script, which mount the PersistentVolumeClaim sparkmoe-data
# (ReadWriteMany) at /data: the model, the corpus and --out live there. Executors: 2, one GPU each
# (nvidia.com/gpu), one task at a time (spark.task.cpus = spark.executor.cores = 4). Settings:
# conf/spark-defaults.k8s.conf (namespace sparkmoe, service account spark); JVM flags:
# conf/jvm.properties; driver logging: the image's copy of conf/log4j2.properties.
set -euo pipefail

die() { echo "submit-gpu: $1" >&2; exit "${2:-1}"; }
[ $# -ge 1 ] || die "usage: submit-gpu.sh <command> [options]" 2
[ -n "${SPARK_HOME:-}" ] || die "SPARK_HOME is not set"
[ -n "${K8S_API:-}" ] || die "K8S_API is not set (the API server, e.g. https://10.0.0.1:6443)"
[ -n "${IMAGE:-}" ] || die "IMAGE is not set (built from deploy/kubernetes/Dockerfile)"

HERE="$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FLAGS="$(sed -n 's/^[[:space:]]*sparkmoe\.jvm\.flags[[:space:]]*[=:][[:space:]]*//p' "$ROOT/conf/jvm.properties" | tail -n 1)"
[ -n "$FLAGS" ] || die "no sparkmoe.jvm.flags in $ROOT/conf/jvm.properties"
IN_IMAGE=/opt/sparkmoe

exec "$SPARK_HOME/bin/spark-submit" \
  --master "k8s://$K8S_API" --deploy-mode cluster --name "sparkmoe-$1" \
  --properties-file "$ROOT/conf/spark-defaults.k8s.conf" \
  --conf "spark.kubernetes.container.image=$IMAGE" \
  --conf "spark.kubernetes.driver.podTemplateFile=$HERE/driver-pod.yaml" \
  --conf "spark.kubernetes.executor.podTemplateFile=$HERE/executor-pod.yaml" \
  --conf spark.executor.resource.gpu.amount=1 \
  --conf spark.executor.resource.gpu.vendor=nvidia.com \
  --conf "spark.executor.resource.gpu.discoveryScript=$IN_IMAGE/deploy/gpu/getGpusResources.sh" \
  --conf spark.task.resource.gpu.amount=1 \
  --conf spark.task.cpus=4 \
  --conf "spark.driver.extraJavaOptions=$FLAGS -Dlog4j2.configurationFile=$IN_IMAGE/conf/log4j2.properties" \
  --conf "spark.executor.extraJavaOptions=$FLAGS" \
  --class org.sparkmoe.driver.SparkMoe \
  "local://$IN_IMAGE/sparkmoe-assembly.jar" \
  "$@"
