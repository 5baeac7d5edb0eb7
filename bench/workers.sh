#!/bin/bash
# loom -w N benchmark (issue 14):   bench/workers.sh [seconds [rounds]]
# 1. A handler that burns 1 ms of CPU per request: req/s of `loom -w 1` and
#    `loom -w 2` under `wrk -t1 -c50`; the ratio shows how the workers scale.
# 2. The plain hello route: CPU time per request with 1 and 2 workers
#    (utime+stime of every worker from /proc over the run / requests).
# On a 2-core machine wrk cannot have a core of its own once two workers
# run: it is left unpinned and shares the cores with them (its CPU is small
# next to 1 ms per request, but it is not nothing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-5}
rounds=${2:-3}
loom=$root/build/loom
hz=$(getconf CLK_TCK)
port=18600
tmp=$(mktemp -d)
sup=
trap '[ -n "$sup" ] && kill $sup 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

# start N: a supervisor of N workers on a new port; $sup its pid
start() {
  port=$((port + 1))
  "$loom" -w "$1" --grace 1 bench/workers_server.lua $port >"$tmp/out" 2>"$tmp/err" &
  sup=$!
  for _ in $(seq 100); do
    [ "$(cat /proc/$sup/task/$sup/children 2>/dev/null | wc -w)" -eq "$1" ] &&
      curl -s -o /dev/null "http://127.0.0.1:$port/" && return
    sleep 0.05
  done
  echo "loom -w $1 did not answer" >&2; cat "$tmp/err" >&2; exit 1
}
stop() { kill $sup; wait $sup 2>/dev/null || true; sup=; }

# CPU ticks (utime+stime) of every worker of $sup
ticks() {
  local t=0 c
  for c in $(cat /proc/$sup/task/$sup/children); do
    t=$((t + $(awk '{print $14 + $15}' /proc/$c/stat)))
  done
  echo $t
}

# run PATH: wrk for $secs; sets $rps, $reqs
run() {
  wrk -t1 -c50 -d${secs}s "http://127.0.0.1:$port$1" >"$tmp/wrk"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk")
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk")
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "loom -w N: $(date -u +%F), $(nproc) cores, wrk -t1 -c50 -d${secs}s (unpinned)," \
  "median of $rounds rounds; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for n in 1 2; do
    start $n
    wrk -t1 -c50 -d1s "http://127.0.0.1:$port/burn" >/dev/null  # warm-up
    run /burn
    echo "$rps" >>"$tmp/burn$n"
    t0=$(ticks)
    run /
    t1=$(ticks)
    awk -v d=$((t1 - t0)) -v hz=$hz -v r=$reqs 'BEGIN {printf "%.2f\n", d / hz / r * 1e6}' \
      >>"$tmp/cpu$n"
    stop
  done
done
printf '%-9s %22s %22s\n' workers "burn 1ms req/s" "hello CPU us/request"
for n in 1 2; do
  printf '%-9s %22s %22s\n' $n "$(median <"$tmp/burn$n") ($(paste -sd/ "$tmp/burn$n"))" \
    "$(median <"$tmp/cpu$n") ($(paste -sd/ "$tmp/cpu$n"))"
done
awk -v a="$(median <"$tmp/burn1")" -v b="$(median <"$tmp/burn2")" \
  -v c="$(median <"$tmp/cpu1")" -v d="$(median <"$tmp/cpu2")" 'BEGIN {
  printf "burn: 2 workers / 1 worker = %.2fx (target >= 1.8x)\n", b / a
  printf "hello CPU/request: 2 workers / 1 worker = %.3f (target within 5%%)\n", d / c }'
