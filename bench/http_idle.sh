#!/bin/bash
# Idle keep-alive HTTP connections (issue 13):   bench/http_idle.sh [conns]
# Each server (loom, nginx + Lua, Node) is started alone; a C libuv client
# opens CONNS connections that each make one keep-alive request and then stay
# open and idle. The figure is the server's RSS growth divided by CONNS, read
# from /proc once every connection has had its answer and the server settled.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
conns=${1:-10000}
loom=$root/build/loom
need=()
for p in nginx libnginx-mod-http-lua nodejs; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  service nginx stop >/dev/null 2>&1 || true
fi
[ -x "$loom" ] || "$root/scripts/build"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$tmp/nginx.pid" ] && kill $(cat "$tmp/nginx.pid") 2>/dev/null; rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/client" bench/echo_client.c -luv
ulimit -n $((2 * conns + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=18500

nginx_conf() {
  mkdir -p "$tmp/nginx/logs"
  cat >"$tmp/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
worker_rlimit_nofile $((2 * conns + 1024));
daemon on;
pid $tmp/nginx.pid;
error_log $tmp/nginx/logs/error.log crit;
events { worker_connections $((2 * conns + 512)); } # nginx 1.22 warned "not enough, reusing connections" at conns + 512
http {
  access_log off;
  keepalive_timeout 300s;
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

# start NAME: run the server on a new port; set $pid (the process measured)
start() {
  port=$((port + 1))
  case $1 in
    nginx) nginx_conf $port
      nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" 2>/dev/null
      for _ in $(seq 100); do [ -s "$tmp/nginx.pid" ] && break; sleep 0.05; done
      pid=$(pgrep -P "$(cat "$tmp/nginx.pid")" | head -1) ;;
    loom) "$loom" bench/http_server.lua $port >"$tmp/out" 2>"$tmp/err" & pid=$! ;;
    node) node bench/http_server.js $port >"$tmp/out" 2>"$tmp/err" & pid=$! ;;
  esac
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return; sleep 0.05; done
  echo "server $1 did not answer" >&2; cat "$tmp/err" >&2 || true; exit 1
}
stop() {
  if [ "$1" = nginx ]; then kill "$(cat "$tmp/nginx.pid")"; rm -f "$tmp/nginx.pid"; sleep 0.2
  else kill $pid; wait $pid 2>/dev/null || true; fi
}
rss_kib() { awk '/VmRSS/ { print $2 }' /proc/$1/status; }

declare -A PER BASE HELD SERIES
for s in loom nginx node; do
  start $s
  # a few requests first so that every server has warmed its code paths
  for _ in 1 2 3; do curl -s -o /dev/null "http://127.0.0.1:$port/"; done
  sleep 0.5
  base=$(rss_kib $pid)
  "$tmp/client" $port httpidle $conns 0 60 >"$tmp/idle.out" &
  cli=$!
  for _ in $(seq 1200); do grep -q connected "$tmp/idle.out" 2>/dev/null && break; sleep 0.05; done
  if ! grep -q connected "$tmp/idle.out"; then
    echo "$s: not every connection was answered within 60 s" >&2
    kill $cli 2>/dev/null || true; wait $cli 2>/dev/null || true
    stop $s || true
    BASE[$s]=0 HELD[$s]=0 PER[$s]=n/a
    continue
  fi
  # the measured thing: the server has answered and settled. RSS is read
  # every second for 5 s (loom parks a connection idle for 1 s and gives the
  # freed memory back a second after the last one); the last is the figure
  series=""
  for _ in 1 2 3 4 5; do
    sleep 1
    series="$series $(( ($(rss_kib $pid) - base) * 1024 / conns ))"
  done
  SERIES[$s]=$series
  held=$(rss_kib $pid)
  kill $cli 2>/dev/null || true; wait $cli 2>/dev/null || true
  stop $s
  BASE[$s]=$base HELD[$s]=$held
  PER[$s]=$(awk -v a=$held -v b=$base -v n=$conns 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
done

echo
echo "8. $conns idle keep-alive HTTP connections, each after one request: server RSS growth"
printf '%-32s %12s %14s\n' "" "B per conn" "RSS MiB"
for s in loom nginx node; do
  case $s in loom) n="loom (router route)" ;; nginx) n="nginx + content_by_lua_block" ;;
    node) n="node http" ;; esac
  printf '%-32s %12s %8s -> %s   (B/conn at 1..5 s:%s)\n' "$n" "${PER[$s]}" "$((BASE[$s] / 1024))" \
    "$((HELD[$s] / 1024))" "${SERIES[$s]:-}"
done
ok() { awk "BEGIN { exit !($1) }" && echo "MET   " || echo "MISSED"; }
echo
echo "targets"
echo "  $(ok "${PER[loom]} <= 2048" 2>/dev/null) http idle: <= 2 KiB per keep-alive connection (${PER[loom]} B;" \
  "nginx ${PER[nginx]} B, node ${PER[node]} B)"
exit 0
