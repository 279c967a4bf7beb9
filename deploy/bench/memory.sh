#!/usr/bin/env bash
# memory.sh: runs one sparkmoe command and reports its wall time and the peak resident memory of every JVM it
# starts (the launcher's java and its children), split into file-backed pages (RssFile: memory-mapped weights,
# shared with the page cache) and anonymous pages (RssAnon: heap, ND4J buffers, scratch), sampled from
# /proc/PID/status every 0.2 s.
#
#   deploy/bench/memory.sh <label> <sparkmoe arguments...>
#   deploy/bench/memory.sh eval-mixtral eval --model out/mixtral-1 --data examples/corpus/sysadmin.txt --out out/m.json
#
# Prints one line: label, exit status, wall seconds, and per JVM peak RSS / RssFile / RssAnon in MiB.
# With ROUNDS_LOG=<the train's train-log.jsonl> it also prints each JVM's peak RssAnon per train round: a sample
# belongs to round r + 1 while the log holds r lines (the log gets a line when a round ends).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0" >&2; exit 2; }
label="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
samples="$(mktemp)"
trap 'rm -f "$samples"' EXIT

start=$(date +%s.%N)
"$root/deploy/bin/sparkmoe" "$@" >"$samples.out" 2>"$samples.err" &
launcher=$!

descendants() {  # the pid and every process below it
  local p="$1"
  echo "$p"
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done
}

while kill -0 "$launcher" 2>/dev/null; do
  round=1
  if [ -n "${ROUNDS_LOG:-}" ] && [ -f "$ROUNDS_LOG" ]; then round=$(( $(wc -l <"$ROUNDS_LOG") + 1 )); fi
  for p in $(descendants "$launcher"); do
    [ "$(cat /proc/"$p"/comm 2>/dev/null)" = java ] || continue
    awk -v pid="$p" -v round="$round" '/^VmRSS|^RssFile|^RssAnon/ {v[$1]=$2} END {if (v["VmRSS:"]) print pid, v["VmRSS:"], v["RssFile:"], v["RssAnon:"], round}' \
      /proc/"$p"/status 2>/dev/null >>"$samples" || true
  done
  sleep 0.2
done
status=0
wait "$launcher" || status=$?
end=$(date +%s.%N)

awk -v label="$label" -v status="$status" -v wall="$(echo "$end - $start" | bc)" '
  { if ($2 > rss[$1]) rss[$1] = $2; if ($3 > file[$1]) file[$1] = $3; if ($4 > anon[$1]) anon[$1] = $4 }
  END {
    line = sprintf("%-20s exit %d  wall %6.1f s", label, status, wall)
    n = 0
    for (p in rss) {
      line = line sprintf("  | jvm %d: peak RSS %6.0f MiB (file %6.0f, anon %6.0f)", ++n, rss[p] / 1024, file[p] / 1024, anon[p] / 1024)
    }
    print line
  }' "$samples"
if [ -n "${ROUNDS_LOG:-}" ]; then
  awk '{ k = $1 " " $5; if ($4 > anon[k]) anon[k] = $4; pids[$1] = 1; if ($5 > last) last = $5 }
    END {
      n = 0
      for (p in pids) {
        line = sprintf("  jvm %d peak RssAnon per round (MiB):", ++n)
        for (r = 1; r <= last; r++) if ((p " " r) in anon) line = line sprintf(" %d: %.0f", r, anon[p " " r] / 1024)
        print line
      }
    }' "$samples"
fi
if [ "$status" -ne 0 ]; then
  echo "--- stderr of the failed command:" >&2
  tail -20 "$samples.err" >&2
fi
rm -f "$samples.out" "$samples.err"
exit "$status"
