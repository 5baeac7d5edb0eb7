#!/bin/bash
# HTTP server benchmark (issue 4), run by scripts/bench:   bench/http.sh [seconds]
# A hello-world keep-alive server on CPU 1, `wrk -t1 -c50` on CPU 0. With two
# cores wrk saturates near the fastest servers, so the figure that ranks them
# is the server's CPU time per request: utime+stime from /proc over the run,
# divided by the requests wrk completed. SERVERS="loom nginx" picks a subset.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-8}
loom=$root/build/loom
py=/usr/bin/python3
need=()
for p in nginx libnginx-mod-http-lua wrk python3-aiohttp python3-uvloop nodejs; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  service nginx stop >/dev/null 2>&1 || true
fi
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill $(cat "$tmp/nginx.pid") 2>/dev/null; rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/http_server" bench/http_server.c -luv
hz=$(getconf CLK_TCK)
port=18000

nginx_conf() {
  mkdir -p "$tmp/nginx/logs"
  cat >"$tmp/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon on;
pid $tmp/nginx.pid;
error_log $tmp/nginx/logs/error.log crit;
events { worker_connections 1024; }
http {
  access_log off;
  lua_code_cache on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$1 backlog=1024;
    location / {
      default_type 'text/plain; charset=utf-8';
      content_by_lua_block { ngx.print("Hello, World!") }
    }
  }
}
NGX
}

# start NAME: run the server on a new port pinned to CPU 1; set $pid (the
# process whose CPU time is measured)
start() {
  port=$((port + 1))
  case $1 in
    nginx) nginx_conf $port
      taskset -c 1 nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" 2>/dev/null
      for _ in $(seq 100); do [ -s "$tmp/nginx.pid" ] && break; sleep 0.05; done
      pid=$(pgrep -P "$(cat "$tmp/nginx.pid")" | head -1)
      taskset -pc 1 "$pid" >/dev/null ;;
    *) case $1 in
         loom) cmd=("$loom" bench/http_server.lua) ;;
         node) cmd=(node bench/http_server.js) ;;
         uvloop) cmd=($py bench/http_server_streams.py) ;;
         aiohttp) cmd=($py bench/http_server_aiohttp.py) ;;
         c) cmd=("$tmp/http_server") ;;
       esac
       taskset -c 1 "${cmd[@]}" $port >"$tmp/out" 2>"$tmp/err" &
       pid=$!
       for _ in $(seq 200); do grep -q ready "$tmp/out" 2>/dev/null && break; sleep 0.05; done ;;
  esac
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return; sleep 0.05; done
  echo "server $1 did not answer" >&2; cat "$tmp/err" >&2 || true; exit 1
}
stop() {
  if [ "$1" = nginx ]; then kill "$(cat "$tmp/nginx.pid")"; rm -f "$tmp/nginx.pid"; sleep 0.2
  else kill $pid; wait $pid 2>/dev/null || true; fi
}
cpu_ticks() { awk '{ print $14 + $15 }' /proc/$1/stat; }
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
  else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 } else { sub(/s$/, "", v); print v * 1000 } }'; }

declare -A RPS CPU P99
servers=${SERVERS:-loom nginx node uvloop aiohttp c}
for s in $servers; do
  start $s
  taskset -c 0 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null # warm up
  t0=$(cpu_ticks $pid)
  taskset -c 0 wrk -t1 -c50 -d${secs}s --latency "http://127.0.0.1:$port/" >"$tmp/wrk"
  t1=$(cpu_ticks $pid)
  reqs=$(awk '/requests in/ { print $1 }' "$tmp/wrk")
  RPS[$s]=$(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$tmp/wrk")
  P99[$s]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$tmp/wrk")")
  CPU[$s]=$(awk -v a=$t0 -v b=$t1 -v hz=$hz -v n=$reqs 'BEGIN { printf "%.2f", (b - a) / hz / n * 1e6 }')
  stop $s
done

echo
echo "7. HTTP hello world, keep-alive: server on CPU 1, wrk -t1 -c50 -d${secs}s on CPU 0"
printf '%-32s %10s %14s %10s\n' "" "req/s" "CPU us/req" "p99 ms"
for s in $servers; do
  case $s in
    loom) n="loom (router route)" ;; nginx) n="nginx + content_by_lua_block" ;;
    node) n="node http" ;; uvloop) n="asyncio streams + uvloop" ;;
    aiohttp) n="aiohttp + uvloop" ;; c) n="C libuv, no parsing (floor)" ;;
  esac
  printf '%-32s %10s %14s %10s\n' "$n" "${RPS[$s]}" "${CPU[$s]}" "${P99[$s]}"
done
[ "$servers" = "loom nginx node uvloop aiohttp c" ] || exit 0
ok() { awk "BEGIN { exit !($1) }" && echo "MET   " || echo "MISSED"; }
echo
echo "targets"
echo "  $(ok "${CPU[loom]} <= ${CPU[nginx]}") http: loom CPU/request <= nginx+lua (${CPU[loom]} vs ${CPU[nginx]} us)"
echo "  $(ok "${CPU[loom]} <= 0.5 * ${CPU[node]}") http: loom CPU/request <= half of node's (${CPU[loom]} vs ${CPU[node]} us)"
echo "  $(ok "${RPS[loom]} >= 0.95 * ${RPS[nginx]}") http: loom req/s >= 95% of nginx+lua (${RPS[loom]} vs ${RPS[nginx]})"
echo "  $(ok "${P99[loom]} <= ${P99[node]}") http: loom p99 <= node's (${P99[loom]} vs ${P99[node]} ms)"
exit 0
