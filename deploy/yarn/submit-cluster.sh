#!/usr/bin/env bash
# Runs one sparkmoe command (eval, train or calibrate: the ones that take one model and text files) on YARN
# in cluster deploy mode (the driver in the ApplicationMaster's
# container), shipping the model folder and the corpus with the job instead of reading them from HDFS:
#
#   SPARK_HOME=/opt/spark HADOOP_CONF_DIR=/etc/hadoop/conf \
#     deploy/yarn/submit-cluster.sh <model dir> <corpus file> <command> [options] --out hdfs:///...
#
# e.g.
#   deploy/yarn/submit-cluster.sh examples/models/mixtral-tiny examples/corpus/sysadmin.txt \
#     train --steps 100 --partitions 2 --out hdfs:///user/$USER/runs/sysadmin
#
# The model folder goes as --archives model.tgz#model and the corpus as --files; YARN unpacks both
# into the working directory of every container, driver and executors alike. The command then gets
# --model file:///proc/self/cwd/model --data file:///proc/self/cwd/<corpus name>: /proc/self/cwd is
# each process's own working directory, so the one path names the local copy in every JVM. --out
# must be on a shared file system (hdfs://): the driver's container is deleted when the job ends.
# Settings: conf/spark-defaults.yarn.conf; JVM flags: conf/jvm.properties; logging:
# conf/log4j2.properties, shipped with --files to the driver and the executors.
# train records the model folder as you give it here in adapter_config.json (--base-model-name), not
# the container's copy; eval's and calibrate's reports name the copy they read,
# file:///proc/self/cwd/model.
# SPARKMOE_SUBMIT_OPTS: extra spark-submit options, split on whitespace (no quoting), as for
# deploy/bin/sparkmoe; they come after the conf file and win over it, e.g.
#   SPARKMOE_SUBMIT_OPTS="--queue ml --conf spark.executor.memory=4g"
# SPARKMOE_ASSEMBLY: the assembly jar to submit, default assembly/target/sparkmoe-assembly.jar. Give
# it a copy on the cluster's file system, put there once per build, e.g.
#   hdfs dfs -mkdir -p /apps/sparkmoe && hdfs dfs -put -f assembly/target/sparkmoe-assembly.jar /apps/sparkmoe/
#   SPARKMOE_ASSEMBLY=hdfs:///apps/sparkmoe/sparkmoe-assembly.jar
# and spark-submit uploads nothing but the model and the corpus per job; the NodeManagers cache a
# world-readable jar (YARN's public cache) and localize it once, not once per application.
set -euo pipefail

die() { echo "submit-cluster: $1" >&2; exit "${2:-1}"; }
[ $# -ge 3 ] || die "usage: submit-cluster.sh <model dir> <corpus file> <command> [options]" 2
MODEL="$1" CORPUS="$2"
shift 2
case "$1" in
  eval|train|calibrate) ;;
  *) die "runs eval, train or calibrate (commands taking --model and --data files), not '$1'" 2 ;;
esac
[ -n "${SPARK_HOME:-}" ] || die "SPARK_HOME is not set"
[ -f "$MODEL/config.json" ] || die "$MODEL is not a model folder (no config.json)"
[ -s "$CORPUS" ] || die "$CORPUS is missing or empty"

ROOT="$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
ASSEMBLY="${SPARKMOE_ASSEMBLY:-$ROOT/assembly/target/sparkmoe-assembly.jar}"
if [ -z "${SPARKMOE_ASSEMBLY:-}" ] && [ ! -f "$ASSEMBLY" ]; then
  (cd "$ROOT" && mvn -q -B -DskipTests -pl assembly -am package) || die "building the assembly failed"
fi
FLAGS="$(sed -n 's/^[[:space:]]*sparkmoe\.jvm\.flags[[:space:]]*[=:][[:space:]]*//p' "$ROOT/conf/jvm.properties" | tail -n 1)"
[ -n "$FLAGS" ] || die "no sparkmoe.jvm.flags in $ROOT/conf/jvm.properties"

# OpenBLAS settings for the driver's and the executors' containers: one thread per task (parallelism
# comes from the task slots), and the kernel set when you give one (else OpenBLAS detects the CPU);
# glibc's malloc in transparent huge pages (deploy/bin/sparkmoe says why), added to your GLIBC_TUNABLES as the
# launcher adds it
case ":${GLIBC_TUNABLES:-}:" in
  *:glibc.malloc.hugetlb=*) ;;
  *) GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
ENV_CONF=()
for var in OPENBLAS_NUM_THREADS OMP_NUM_THREADS OPENBLAS_CORETYPE GLIBC_TUNABLES; do
  value="${!var:-}"
  case "$var" in OPENBLAS_NUM_THREADS | OMP_NUM_THREADS) value="${value:-1}" ;; esac
  [ -z "$value" ] || ENV_CONF+=(--conf "spark.yarn.appMasterEnv.$var=$value" --conf "spark.executorEnv.$var=$value")
done

read -r -a SUBMIT_OPTS <<< "${SPARKMOE_SUBMIT_OPTS:-}"

# the adapter names the folder given here, unless the command names one itself
NAME_ARGS=()
[ "$1" != train ] || NAME_ARGS=(--base-model-name "$MODEL")
for arg in "${@:2}"; do
  case "$arg" in --base-model-name | --base-model-name=*) NAME_ARGS=() ;; esac
done

# the archive holds the folder's files at its top level: YARN unpacks it into ./model
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
tar -czf "$WORK/model.tgz" -C "$MODEL" .

# spark-submit uploads the archive and files to the staging directory before it returns
"$SPARK_HOME/bin/spark-submit" \
  --master yarn --deploy-mode cluster --name "sparkmoe $1" \
  --properties-file "$ROOT/conf/spark-defaults.yarn.conf" \
  --archives "$WORK/model.tgz#model" \
  --files "$CORPUS,$ROOT/conf/log4j2.properties" \
  --conf "spark.driver.extraJavaOptions=$FLAGS -Dlog4j2.configurationFile=log4j2.properties" \
  --conf "spark.executor.extraJavaOptions=$FLAGS -Dlog4j2.configurationFile=log4j2.properties" \
  "${ENV_CONF[@]}" \
  ${SUBMIT_OPTS[@]+"${SUBMIT_OPTS[@]}"} \
  --class org.sparkmoe.driver.SparkMoe \
  "$ASSEMBLY" \
  "$1" --model file:///proc/self/cwd/model --data "file:///proc/self/cwd/$(basename "$CORPUS")" \
  ${NAME_ARGS[@]+"${NAME_ARGS[@]}"} "${@:2}"
