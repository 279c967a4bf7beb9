#!/usr/bin/env bash
# profile.sh: runs one sparkmoe command in the embedded mode under async-profiler (CPU samples every millisecond,
# Java and native frames) and prints where the Spark tasks' CPU time went: libnd4j's allocation (its zero-fill and
# the page faults under it), SparkMoE's Java kernels, the rest; then the top allocation sites and Java leaves.
#
#   deploy/bench/profile.sh OUT.collapsed <sparkmoe arguments...>
#   deploy/bench/profile.sh out/eval.collapsed eval --model examples/models/mixtral-tiny \
#       --data examples/corpus/manuals.txt --split test --window 256 --batch-windows 8 --out out/e.json
#
# async-profiler comes from Maven Central (tools.profiler:async-profiler:3.0, which bundles linux-x64's
# libasyncProfiler.so) into ~/.m2 on first use. The collapsed stacks (one "frame;frame;... count" line per stack) are
# left in OUT.collapsed for a flame graph. SPARKMOE_JAVA_OPTS, when set, is kept and the agent added to it; else the
# run gets -Xmx1g. Native frames without frame pointers (OpenBLAS) lose their Java callers: the summary counts them
# as BLAS apart from the tasks.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
out="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version=3.0
jar="$HOME/.m2/repository/tools/profiler/async-profiler/$version/async-profiler-$version.jar"
[ -f "$jar" ] || mvn -q -B dependency:get -Dartifact="tools.profiler:async-profiler:$version" >&2
lib="$(mktemp -d)"
trap 'rm -rf "$lib"' EXIT
unzip -q -o "$jar" 'linux-x64/libasyncProfiler.so' -d "$lib"
agent="-agentpath:$lib/linux-x64/libasyncProfiler.so=start,event=cpu,interval=1ms,file=$out,collapsed,cstack=vm"
SPARKMOE_JAVA_OPTS="${SPARKMOE_JAVA_OPTS:--Xmx1g} $agent" "$root/deploy/bin/sparkmoe" "$@"
python3 "$root/deploy/bench/profile_summary.py" "$out"
