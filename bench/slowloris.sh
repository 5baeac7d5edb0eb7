#!/bin/bash
# Slow clients against a loom http.static server (issue 13; not CI):
#   bench/slowloris.sh [X|H|B ...]     (default: X H B)
# Serves a 1 GiB sparse file and attacks it with slowhttptest: -X slow read
# (a tiny receive window read a few bytes at a time), -H slow headers, -B slow
# body. Samples the server's RSS and open descriptors every second during the
# attack and for 15 s after, and prints them with the baseline. LEN=secs sets
# the attack's length (default 30; slowhttptest's own default is 240);
# SEND_TIMEOUT=secs the server's send_timeout (default: http.listen's, 60);
# SIZE the served file's size (default 1G; e.g. SIZE=4M: one under the old
# whole-file limit of http.static).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
len=${LEN:-30}
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(X H B)
command -v slowhttptest >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slowhttptest >/dev/null; }
[ -x build/loom ] || scripts/build
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
truncate -s "${SIZE:-1G}" "$tmp/big.bin"
cat >"$tmp/server.lua" <<LUA
local http = require "loom.http"
local opts = { backlog = 1024, send_timeout = tonumber(os.getenv("SEND_TIMEOUT") or "") }
local srv = http.listen("127.0.0.1", tonumber(arg[1]), http.static("$tmp"), opts)
print("ready") io.stdout:flush()
srv:wait()
LUA
ulimit -n 4096
port=$((18800 + RANDOM % 100))
rss() { awk '/VmRSS/ { print int($2 / 1024) }' /proc/$1/status; }
fds() { ls /proc/$1/fd | wc -l; }

for m in "${modes[@]}"; do
  port=$((port + 1))
  build/loom "$tmp/server.lua" $port >"$tmp/out" 2>"$tmp/err" & pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null -r 0-0 "http://127.0.0.1:$port/big.bin" && break; sleep 0.05; done
  base_rss=$(rss $pid) base_fds=$(fds $pid)
  url="http://127.0.0.1:$port/big.bin"
  case $m in
    X) args=(-X -c 500 -w 512 -y 1024 -n 5 -z 32 -k 3) ;;
    H) args=(-H -c 500 -i 10 -r 200) ;;
    B) args=(-B -c 500 -i 10 -r 200 -s 8192) ;;
  esac
  echo "== slowhttptest ${args[*]} -l $len -u $url"
  slowhttptest "${args[@]}" -l "$len" -u "$url" >"$tmp/attack.out" 2>&1 & att=$!
  peak_rss=0 peak_fds=0 t=0
  while kill -0 $att 2>/dev/null; do
    sleep 1; t=$((t + 1))
    r=$(rss $pid) f=$(fds $pid)
    [ "$r" -gt "$peak_rss" ] && peak_rss=$r
    [ "$f" -gt "$peak_fds" ] && peak_fds=$f
    [ $((t % 5)) -eq 0 ] && echo "  t=${t}s  RSS ${r} MiB  fds ${f}"
  done
  wait $att 2>/dev/null || true
  echo "  attack over after ${t}s; peak RSS ${peak_rss} MiB, peak fds ${peak_fds} (baseline ${base_rss} MiB, ${base_fds} fds)"
  back=""
  for a in $(seq 15); do
    sleep 1
    r=$(rss $pid) f=$(fds $pid)
    [ -z "$back" ] && [ "$f" -le "$base_fds" ] && back=$a
    [ $((a % 5)) -eq 0 ] && echo "  after +${a}s  RSS ${r} MiB  fds ${f}"
  done
  if [ -n "$back" ]; then echo "  descriptors back to the baseline after ${back}s"
  else echo "  descriptors NOT back to the baseline within 15 s"; fi
  sed 's/\x1b\[[0-9;]*m//g' "$tmp/attack.out" | grep -E "service available|closed|connected" |
    tail -3 | sed 's/^/  slowhttptest: /' || true
  kill $pid; wait $pid 2>/dev/null || true
done
