#!/bin/bash
# gzip benchmark (issue 17):   bench/gzip.sh [seconds]
# A 100 KB JSON document answered gzipped (Accept-Encoding: gzip) by loom
# (compression in the server: its default level 1, and 6) and by nginx (`gzip on`, its
# default level 1, the file served from disk). Server on CPU 1, `wrk -t1
# -c20` on CPU 0; the figure that ranks them is the server's CPU time per
# request from /proc (the machine is shared), req/s is shown too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-8}
loom=$root/build/loom
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill $(cat "$tmp/nginx.pid") 2>/dev/null; rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)
port=18100
mkdir -p "$tmp/www" "$tmp/nginx/logs"
chmod 755 "$tmp" "$tmp/www" # nginx workers run as nobody
# ~100 KB of JSON: records with numbers, names and tags, as an API answers
"$loom" -e '
local json = require "loom.json"
local items = {}
for i = 1, 1150 do
  items[i] = { id = i, name = "item number " .. i, price = (i * 37 % 1000) / 10,
    tags = { "tag" .. i % 7, "tag" .. i % 11 }, active = i % 3 == 0 }
end
io.write(json.encode({ items = items, total = 1150 }))' >"$tmp/www/doc.json"
chmod 644 "$tmp/www/doc.json"
bytes=$(stat -c %s "$tmp/www/doc.json")

nginx_conf() {
  cat >"$tmp/nginx.conf" <<NGX
worker_processes 1;
daemon on;
pid $tmp/nginx.pid;
error_log $tmp/nginx/logs/error.log crit;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000;
  types { application/json json; }
  gzip on;
  gzip_types application/json;
  server {
    listen 127.0.0.1:$1 backlog=1024;
    root $tmp/www;
  }
}
NGX
}

start() {
  port=$((port + 1))
  case $1 in
    nginx) nginx_conf $port
      taskset -c 1 nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" 2>/dev/null
      for _ in $(seq 100); do [ -s "$tmp/nginx.pid" ] && break; sleep 0.05; done
      pid=$(pgrep -P "$(cat "$tmp/nginx.pid")" | head -1)
      taskset -pc 1 "$pid" >/dev/null ;;
    loom1|loom6)
      taskset -c 1 "$loom" bench/gzip_server.lua $port "${1#loom}" "$tmp/www/doc.json" \
        >"$tmp/out" 2>"$tmp/err" &
      pid=$!
      for _ in $(seq 200); do grep -q ready "$tmp/out" 2>/dev/null && break; sleep 0.05; done ;;
  esac
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/doc.json" && break; sleep 0.05
  done
  size[$1]=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/doc.json" | wc -c)
  curl -s --compressed "http://127.0.0.1:$port/doc.json" | cmp -s - "$tmp/www/doc.json" \
    || { echo "$1: the decoded body differs" >&2; exit 1; }
}
stop() {
  if [ "$1" = nginx ]; then kill "$(cat "$tmp/nginx.pid")"; rm -f "$tmp/nginx.pid"; sleep 0.2
  else kill $pid; wait $pid 2>/dev/null || true; fi
}
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }

declare -A RPS CPU size
servers=${SERVERS:-nginx loom1 loom6}
for s in $servers; do
  start $s
  url="http://127.0.0.1:$port/doc.json"
  taskset -c 0 wrk -t1 -c20 -d1s -H 'Accept-Encoding: gzip' "$url" >/dev/null # warm up
  t0=$(cpu_ticks $pid)
  taskset -c 0 wrk -t1 -c20 -d${secs}s -H 'Accept-Encoding: gzip' "$url" >"$tmp/wrk"
  t1=$(cpu_ticks $pid)
  reqs=$(awk '/requests in/ { print $1 }' "$tmp/wrk")
  RPS[$s]=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$tmp/wrk")
  CPU[$s]=$(awk -v a=$t0 -v b=$t1 -v hz=$hz -v n=$reqs 'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')
  stop $s
done

echo
echo "gzip: a $bytes-byte JSON answer, Accept-Encoding: gzip; server on CPU 1, wrk -t1 -c20 -d${secs}s on CPU 0"
printf '%-34s %10s %14s %12s\n' "" "req/s" "CPU us/req" "gzip bytes"
for s in $servers; do
  case $s in
    nginx) n="nginx gzip on (level 1), file" ;; loom1) n="loom default (level 1)" ;;
    loom6) n="loom compress_level = 6" ;;
  esac
  printf '%-34s %10s %14s %12s\n' "$n" "${RPS[$s]}" "${CPU[$s]}" "${size[$s]}"
done
[ "$servers" = "nginx loom1 loom6" ] || exit 0
ok() { awk "BEGIN { exit !($1) }" && echo "MET   " || echo "MISSED"; }
echo
echo "targets"
echo "  $(ok "${CPU[loom1]} * 0.8 <= ${CPU[nginx]}") gzip: loom >= 80% of nginx's throughput per CPU at its level (${CPU[loom1]} vs ${CPU[nginx]} us/req)"
exit 0
