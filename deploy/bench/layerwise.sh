#!/usr/bin/env bash
# layerwise.sh: one eval run twice, whole-model and --layerwise, on Spark's local-cluster master (a Master and N
# one-core Workers inside the driver JVM; each Worker launches its executor as a JVM of its own), and the memory of
# every executor JVM: peak RSS (VmHWM, the kernel's high-water mark) and the sampled peaks of its file-backed
# (RssFile: the memory-mapped weights) and anonymous pages (RssAnon: heap, ND4J buffers, stored hidden states), read
# from /proc every 0.2 s; the driver JVM's likewise; each run's scored tokens/s (eval's own line); then a table with
# the ratios layerwise / whole.
#
#   deploy/bench/layerwise.sh MODEL DATA [more eval arguments...]
#   deploy/bench/layerwise.sh out/q3-4 out/sysadmin-4k.txt --split all --window 256 --batch-windows 2
#
# Environment: EXECUTORS (default 2); OUT (reports, logs and the SPARK_HOME-like folder, default out/bench-layerwise).
# The executors' heap is what `eval --dry-run --master local[1]` plans for each run ("heap needed ... (-XmxNm)"), the
# driver's -Xmx1g. local-cluster's Workers find the executors' classpath in ./jars of the driver's working folder
# (Spark's default SPARK_HOME is "."; setting SPARK_HOME would make the launcher use spark-submit), so the runs start
# in $OUT/spark-home, whose jars/ links the driver jar and its Maven classpath; the executors get the JVM flags of
# conf/jvm.properties through JDK_JAVA_OPTIONS, which every java launched below inherits.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
model="$(realpath "$1")"; data="$(realpath "$2")"; shift 2
executors="${EXECUTORS:-2}"
out="$(realpath -m "${OUT:-$root/out/bench-layerwise}")"
launcher="$root/deploy/bin/sparkmoe"
mkdir -p "$out"

heap_of() {  # the heap (MiB) eval's memory plan asks for one task slot; builds the driver jar on first use
  "$launcher" eval --model "$model" --data "$data" "$@" --master 'local[1]' --dry-run 2>&1 \
    | sed -n 's/^memory plan: heap needed .*(-Xmx\([0-9]*\)m;.*/\1/p' | tail -n 1
}
heap_whole="$(heap_of "$@" --layerwise=false)"
heap_layerwise="$(heap_of "$@" --layerwise)"
[ -n "$heap_whole" ] && [ -n "$heap_layerwise" ] || { echo "layerwise.sh: eval --dry-run gave no heap" >&2; exit 1; }

home="$out/spark-home"
rm -rf "$home"
mkdir -p "$home/jars"
for jar in "$root/driver/target/sparkmoe-driver-0.1.0-SNAPSHOT.jar" $(tr ':' ' ' <"$root/driver/target/classpath.txt"); do
  case "$jar" in *.jar) ;; *) continue ;; esac
  link="$home/jars/$(basename "$jar")"
  n=1
  while [ -e "$link" ]; do link="$home/jars/$n-$(basename "$jar")"; n=$((n + 1)); done
  ln -s "$jar" "$link"
done
flags="$(sed -n 's/^[[:space:]]*sparkmoe\.jvm\.flags[[:space:]]*[=:][[:space:]]*//p' "$root/conf/jvm.properties" | tail -n 1)"

descendants() {  # the pid and every process below it (children of every thread)
  local p="$1"
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
}

run() {  # run MODE HEAP_MB [eval arguments...]: one eval; its samples in $out/MODE.samples, stderr in $out/MODE.err
  local mode="$1" heap="$2"; shift 2
  local samples="$out/$mode.samples"
  : >"$samples"
  local start end status=0
  start=$(date +%s.%N)
  (cd "$home" && SPARK_SCALA_VERSION=2.12 JDK_JAVA_OPTIONS="$flags" \
    SPARKMOE_JAVA_OPTS="-Xmx1g -Dspark.executor.memory=${heap}m -Dspark.ui.enabled=false" \
    exec "$launcher" eval --model "$model" --data "$data" "$@" --master "local-cluster[$executors,1,$heap]" \
      --out "$out/$mode.json") >"$out/$mode.out" 2>"$out/$mode.err" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for p in $(descendants "$pid"); do
      [ "$(cat /proc/"$p"/comm 2>/dev/null)" = java ] || continue
      local role=driver
      if tr '\0' ' ' 2>/dev/null </proc/"$p"/cmdline | grep -q CoarseGrainedExecutorBackend; then role=executor; fi
      awk -v pid="$p" -v role="$role" '/^VmHWM|^RssFile|^RssAnon/ {v[$1]=$2}
        END {if (v["VmHWM:"]) print pid, role, v["VmHWM:"], v["RssFile:"], v["RssAnon:"]}' \
        /proc/"$p"/status 2>/dev/null >>"$samples" || true
    done
    sleep 0.2
  done
  wait "$pid" || status=$?
  end=$(date +%s.%N)
  echo "$mode $status $(echo "$end - $start" | bc)" >"$out/$mode.wall"
  if [ "$status" -ne 0 ]; then
    echo "layerwise.sh: the $mode run failed (exit $status); the end of its stderr ($out/$mode.err):" >&2
    grep -v '^NOTE: Picked up JDK_JAVA_OPTIONS' "$out/$mode.err" | tail -20 >&2
    exit "$status"
  fi
}

run whole "$heap_whole" "$@" --layerwise=false
run layerwise "$heap_layerwise" "$@" --layerwise

summary() {  # summary MODE HEAP: "MODE heap wall tokens/s | executor peaks (max over executors) | driver peaks"
  local mode="$1" heap="$2"
  local wall tps
  wall=$(awk '{print $3}' "$out/$mode.wall")
  tps=$(sed -n 's/^eval: \([0-9]*\) scored tokens in \([0-9.]*\) s .*/\1 \2/p' "$out/$mode.err" | tail -n 1 \
    | awk '{printf "%.2f", $1 / $2}')
  awk -v mode="$mode" -v heap="$heap" -v wall="$wall" -v tps="$tps" '
    { if ($3 > hwm[$1]) hwm[$1] = $3; if ($4 > file[$1]) file[$1] = $4; if ($5 > anon[$1]) anon[$1] = $5; role[$1] = $2 }
    END {
      for (p in hwm) {
        r = role[p]; n[r]++
        if (hwm[p] > H[r]) H[r] = hwm[p]; if (file[p] > F[r]) F[r] = file[p]; if (anon[p] > A[r]) A[r] = anon[p]
      }
      printf "%s %s %.1f %s %d %.0f %.0f %.0f %.0f %.0f %.0f\n", mode, heap, wall, tps, n["executor"],
        H["executor"] / 1024, F["executor"] / 1024, A["executor"] / 1024, H["driver"] / 1024, F["driver"] / 1024,
        A["driver"] / 1024
    }' "$out/$mode.samples"
}

{
  summary whole "$heap_whole"
  summary layerwise "$heap_layerwise"
} | awk '
  { m[NR] = $1; heap[NR] = $2; wall[NR] = $3; tps[NR] = $4; n[NR] = $5; eh[NR] = $6; ef[NR] = $7; ea[NR] = $8
    dh[NR] = $9; df[NR] = $10; da[NR] = $11 }
  END {
    print "| run | executor heap | executors | wall | tokens/s | executor peak RSS | file-backed | anonymous | driver peak RSS |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= 2; i++)
      printf "| %s | %d MiB | %d | %.1f s | %s | %d MiB | %d MiB | %d MiB | %d MiB |\n", m[i], heap[i], n[i], wall[i],
        tps[i], eh[i], ef[i], ea[i], dh[i]
    printf "| layerwise / whole | | | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", wall[2] / wall[1],
      tps[2] / tps[1], eh[2] / eh[1], ef[2] / ef[1], ea[2] / ea[1], dh[2] / dh[1]
    print "(executor columns: the largest over the executor JVMs; peak RSS is VmHWM, file-backed and anonymous the sampled peaks)"
  }'
scores=$(( $(wc -c <"$out/whole.json") - 3 ))  # the whole-model report without its closing "\n}\n"
if cmp -s -n "$scores" "$out/whole.json" "$out/layerwise.json"; then
  echo "reports: the scores are byte-identical; the layerwise report adds its \"layerwise\" section"
else
  echo "reports: the scores DIFFER ($out/whole.json, $out/layerwise.json)"
fi
grep '^eval --layerwise: layer ' "$out/layerwise.err" || true
