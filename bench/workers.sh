#!/bin/bash
# loom -w N benchmark (issue 14):   bench/workers.sh [seconds [rounds]]
# 1. A handler that burns 1 ms of CPU per request: req/s of `loom -w 1` and
#    `loom -w 2` under `wrk -t1 -c50`, all unpinned; the ratio shows how the
#    workers scale.
# 2. The plain hello route: the workers' CPU time per request with 1 and 2
#    workers (their sum_exec_runtime from /proc/PID/schedstat, user + kernel,
#    in ns, over the run / the requests wrk completed), measured two ways:
#    "shared": everything unpinned, wrk -c50, as in 1. With two workers wrk is
#      a third busy process on two cores and shares a core with a worker.
#    "pinned": wrk -c50 alone on CPU 1, the workers (1 or 2) on CPU 0: the
#      load generator has a core of its own ("wrk from another core") and the
#      workers the same single core in both runs.
#    With each: the workers' context switches per request (/proc/PID/status).
# 3. Once, if valgrind is there: instructions per hello request (callgrind,
#    user space) of the workers of `loom -w 1` and `loom -w 2`, counters zeroed
#    after a warm-up: work per request that core sharing cannot disturb.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-5}
rounds=${2:-3}
loom=$root/build/loom
port=18600
tmp=$(mktemp -d)
sup=
trap '[ -n "$sup" ] && kill $sup 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

# start N [CPUS] [WRAP...]: a supervisor of N workers on a new port (on CPUS if
# given, under WRAP if given); $sup its pid, $kids the workers' pids
start() {
  local n=$1 cpus=${2:-} tries=100
  shift 2 || shift $#
  port=$((port + 1))
  [ $# -gt 0 ] && tries=600
  ${cpus:+taskset -c $cpus} "$@" "$loom" -w "$n" --grace 1 bench/workers_server.lua $port \
    >"$tmp/out" 2>"$tmp/err" &
  sup=$!
  for _ in $(seq $tries); do
    kids=$(cat /proc/$sup/task/$sup/children 2>/dev/null || true)
    [ "$(echo $kids | wc -w)" -eq "$n" ] &&
      curl -s -o /dev/null "http://127.0.0.1:$port/" && return
    sleep 0.05
  done
  echo "loom -w $n did not answer" >&2; cat "$tmp/err" >&2; exit 1
}
stop() { kill $sup; wait $sup 2>/dev/null || true; sup=; }

# CPU time (ns, user + kernel) and context switches of every worker of $sup
cpu_ns() {
  local t=0 c
  for c in $kids; do t=$((t + $(cut -d' ' -f1 /proc/$c/schedstat))); done
  echo $t
}
switches() {
  local t=0 c
  for c in $kids; do
    t=$((t + $(awk '/ctxt_switches/ {s += $2} END {print s}' /proc/$c/status)))
  done
  echo $t
}

# run PATH CONNS [CPU...]: wrk -cCONNS for $secs, one per CPU given (pinned
# there), else one unpinned; sets $rps, $reqs (sums over them)
run() {
  local path=$1 conns=$2 pids= c
  shift 2
  rm -f "$tmp"/wrk.*
  if [ $# -eq 0 ]; then set -- ""; fi
  for c in "$@"; do
    ${c:+taskset -c $c} wrk -t1 -c$conns -d${secs}s "http://127.0.0.1:$port$path" \
      >"$tmp/wrk.${c:-x}" &
    pids="$pids $!"
  done
  wait $pids
  rps=$(cat "$tmp"/wrk.* | awk '/^Requests\/sec/ {s += $2} END {print s}')
  reqs=$(cat "$tmp"/wrk.* | awk '/requests in/ {s += $1} END {print s}')
}

# hello NAME CONNS [CPU...]: the workers' CPU us and context switches per
# hello request under run / CONNS CPU...
hello() {
  local name=$1 t0 t1 c0 c1
  shift
  t0=$(cpu_ns); c0=$(switches)
  run / "$@"
  t1=$(cpu_ns); c1=$(switches)
  awk -v d=$((t1 - t0)) -v r=$reqs 'BEGIN {printf "%.2f\n", d / 1000 / r}' >>"$tmp/$name"
  awk -v d=$((c1 - c0)) -v r=$reqs 'BEGIN {printf "%.3f\n", d / r}' >>"$tmp/$name.cs"
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
cell() { echo "$(median <"$tmp/$1") ($(paste -sd/ "$tmp/$1"))"; }

echo "loom -w N: $(date -u '+%F %H:%M') UTC, $(nproc) cores, wrk -t1 -c50 -d${secs}s," \
  "median of $rounds rounds; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for n in 1 2; do
    start $n
    wrk -t1 -c50 -d1s "http://127.0.0.1:$port/burn" >/dev/null  # warm-up
    run /burn 50
    echo "$rps" >>"$tmp/burn$n"
    hello shared$n 50
    stop
    start $n 0
    taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null  # warm-up
    hello pinned$n 50 1
    stop
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "burn 1ms, req/s:"
for n in 1 2; do printf '  %s worker(s): %s\n' $n "$(cell burn$n)"; done
echo "hello, the workers' CPU us per request (context switches per request):"
for m in shared pinned; do
  printf '  %-7s 1: %-28s 2: %s\n' $m "$(cell ${m}1) ($(median <"$tmp/${m}1.cs"))" \
    "$(cell ${m}2) ($(median <"$tmp/${m}2.cs"))"
done
awk -v a="$(median <"$tmp/burn1")" -v b="$(median <"$tmp/burn2")" 'BEGIN {
  printf "burn: 2 workers / 1 worker = %.2fx (target >= 1.8x)\n", b / a }'
for m in shared pinned; do
  awk -v m=$m -v c="$(median <"$tmp/${m}1")" -v d="$(median <"$tmp/${m}2")" 'BEGIN {
    printf "hello CPU/request, 2 workers / 1 worker, %s: %.3f (target within 5%%)\n", m, d / c }'
done

# 3. callgrind: Ir of the workers between zeroing after a warm-up and a dump
#    right after wrk, divided by wrk's requests
command -v valgrind >/dev/null || { echo "(no valgrind: no instruction count)"; exit 0; }
# 1 worker with 50 connections and with 25 (as each of 2 workers has)
for nc in 1:50 1:25 2:50; do
  n=${nc%:*}
  rm -f "$tmp"/cg.*
  start $n "" valgrind --tool=callgrind --trace-children=yes \
    --callgrind-out-file="$tmp/cg.%p"
  wrk -t1 -c${nc#*:} -d3s "http://127.0.0.1:$port/" >/dev/null  # warm-up
  for c in $kids; do callgrind_control -z $c >/dev/null 2>&1; done
  run / ${nc#*:}
  for c in $kids; do callgrind_control -d $c >/dev/null 2>&1; done
  ir=0
  for c in $kids; do
    ir=$((ir + $(awk '/^totals:/ {print $2; exit}' "$(ls -t "$tmp"/cg.$c* | head -1)")))
  done
  echo $((ir / reqs)) >"$tmp/ir$n.${nc#*:}"
  stop
done
awk -v a="$(cat "$tmp/ir1.50")" -v a2="$(cat "$tmp/ir1.25")" -v b="$(cat "$tmp/ir2.50")" 'BEGIN {
  printf "hello instructions/request (callgrind, user space, wrk -c50 unless said):\n"
  printf "  1 worker %d (-c25: %d), 2 workers %d: 2 / 1 = %.3f (vs -c25: %.3f)\n",
    a, a2, b, b / a, b / a2 }'
