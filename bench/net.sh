#!/bin/bash
# Networking and process benchmarks (issue 3 and 5), run by scripts/bench:
#   bench/net.sh [seconds [rounds]]
# Servers are pinned to CPU 1 and the load generator (bench/echo_client.c,
# C + libuv) to CPU 0. Compared: loom, a minimal C libuv echo server
# (bench/echo_server.c) and Node's net module, all in this one run, plus the
# ceiling of the echo load: a bare epoll server (bench/echo_server_epoll.c).
# The servers take turns, `rounds` times (default 3); each figure is the
# median of its rounds, as one run of a few seconds varies by some 5%.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-5}
rounds=${2:-3}
loom=$root/build/loom
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/echo_server" bench/echo_server.c -luv
cc -O2 -o "$tmp/echo_client" bench/echo_client.c -luv
cc -O2 -o "$tmp/echo_server_epoll" bench/echo_server_epoll.c
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

port=17000
# serve NAME CMD...: start a server on a fresh port (pinned), wait for "ready"
serve() {
  port=$((port + 1))
  taskset -c 1 "$@" $port >"$tmp/srv.out" 2>"$tmp/srv.err" &
  srv=$!
  for _ in $(seq 100); do grep -q ready "$tmp/srv.out" 2>/dev/null && return; sleep 0.05; done
  echo "server did not start: $*" >&2; cat "$tmp/srv.err" >&2; exit 1
}
stop() { kill $srv 2>/dev/null; wait $srv 2>/dev/null || true; }
client() { taskset -c 0 "$tmp/echo_client" $port "$@" | awk '{ print $1 }'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' /proc/$1/status; }

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A PP BULK PPS BULKS
for _ in $(seq "$rounds"); do
  for name in c loom node epoll; do
    case $name in
      c) cmd=("$tmp/echo_server") ;;
      loom) cmd=("$loom" bench/echo_server.lua) ;;
      node) cmd=(node bench/echo_server.js) ;;
      epoll) cmd=("$tmp/echo_server_epoll") ;;
    esac
    serve "${cmd[@]}"; PPS[$name]+=" $(client pingpong 100 64 "$secs")"; stop
    [ $name = epoll ] && continue # ping-pong only: it does not buffer
    serve "${cmd[@]}"; BULKS[$name]+=" $(client bulk 1 65536 "$secs")"; stop
  done
done
for name in c loom node epoll; do
  PP[$name]=$(echo "${PPS[$name]}" | median)
  [ $name = epoll ] || BULK[$name]=$(echo "${BULKS[$name]}" | median)
done

# 10,000 idle connections held by one server: RSS per connection
idle=10000
serve "$loom" bench/echo_server.lua
base=$(rss_kib $srv)
taskset -c 0 "$tmp/echo_client" $port idle $idle 0 30 >"$tmp/idle.out" &
cli=$!
for _ in $(seq 600); do grep -q connected "$tmp/idle.out" 2>/dev/null && break; sleep 0.05; done
sleep 1 # the measured thing: the server has accepted and settled
held=$(rss_kib $srv)
kill $cli 2>/dev/null; wait $cli 2>/dev/null || true
stop
per=$(awk -v a=$held -v b=$base -v n=$idle 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')

r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ok() { awk "BEGIN { exit !($1) }" && echo "MET   " || echo "MISSED"; }
echo
echo "4. TCP echo, server on CPU 1, C libuv load generator on CPU 0, median of $rounds runs of ${secs} s"
printf '%-34s %14s %14s\n' "" "64 B x 100 conn" "bulk, 1 conn"
printf '%-34s %14s %14s\n' "" "msg/s" "MiB/s"
for name in c loom node; do
  printf '%-34s %14s %14s   (runs:%s)\n' "$name" "${PP[$name]}" "${BULK[$name]}" "${PPS[$name]}"
done
printf '%-34s %14s %14s   (runs:%s)\n' "epoll (the ceiling: no work of its own)" "${PP[epoll]}" "-" "${PPS[epoll]}"
echo "   loom at $(r ${PP[loom]} ${PP[epoll]}) of the ceiling, node at $(r ${PP[node]} ${PP[epoll]})"
echo "5. $idle idle connections held by a loom server: $per B per connection" \
  "(RSS $((base / 1024)) -> $((held / 1024)) MiB)"

# process.run({"true"}) x 1000 at concurrency 50
hf() { taskset -c 1 hyperfine -N --style none --warmup 1 --runs 3 --export-csv "$tmp/$1.csv" "$2" >/dev/null 2>&1; awk -F, 'NR == 2 { print $(NF - 4) }' "$tmp/$1.csv"; }
p_loom=$(hf pl "$loom bench/proc_run.lua 1000 50")
p_node=$(hf pn "node bench/proc_run.js 1000 50")
p_py=$(hf pp "$py bench/proc_run.py 1000 50")
echo "6. process.run({'true'}) x 1000 at concurrency 50 (CPU 1): loom" \
  "$(awk -v s=$p_loom 'BEGIN { printf "%.0f", s * 1000 }') ms," \
  "node execFile $(r $p_node $p_loom)x slower, asyncio subprocess $(r $p_py $p_loom)x slower"

echo
echo "targets"
echo "  $(ok "${PP[loom]} >= 0.7 * ${PP[c]}") echo: loom >= 70% of the C server ($(r ${PP[loom]} ${PP[c]}))"
echo "  $(ok "${PP[loom]} >= 1.5 * ${PP[node]}") echo: loom >= 1.5x node ($(r ${PP[loom]} ${PP[node]})x)"
echo "  $(ok "${BULK[loom]} >= 0.8 * ${BULK[c]}") bulk: loom >= 80% of the C server ($(r ${BULK[loom]} ${BULK[c]}))"
echo "  $(ok "$per <= 4096") idle: <= 4 KiB per connection ($per B)"
exit 0
