#!/bin/bash
# HTTP client benchmark (issue 4), run by scripts/bench:
#   bench/http_client.sh [runs]
# 2,000 GETs at concurrency 50 against a local nginx (one worker, pinned to
# CPU 0, a static "hello" answer, keep-alive on) by three clients pinned to
# CPU 1: loom.http, aiohttp on uvloop, and curl --parallel. Wall time of the
# whole client process is hyperfine's median of `runs` runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${1:-5}
n=2000 conc=50
loom=$root/build/loom
py=/usr/bin/python3
tmp=$(mktemp -d)
stop_nginx() {
  if [ -s "$tmp/nginx.pid" ]; then
    kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 100); do [ -e "$tmp/nginx.pid" ] || break; sleep 0.05; done
  fi
}
trap 'stop_nginx; rm -rf "$tmp"' EXIT

# ---- peers ----
need=()
for p in nginx python3-aiohttp python3-uvloop curl hyperfine; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing ${need[*]} ..." >&2
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$loom" ] || "$root/scripts/build"
nginx=$(command -v nginx || echo /usr/sbin/nginx)

# ---- nginx on a free port, in $tmp ----
port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_timeout 65;
  keepalive_requests 100000;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    location / { default_type text/plain; return 200 "hello\n"; }
  }
}
EOF
taskset -c 0 "$nginx" -e "$tmp/error.log" -p "$tmp" -c "$tmp/nginx.conf"
url=http://127.0.0.1:$port/
for _ in $(seq 100); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fs "$url" >/dev/null || { echo "nginx did not start" >&2; cat "$tmp/error.log" >&2; exit 1; }

for _ in $(seq $n); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done >"$tmp/curl.cfg"

# ---- measuring ----
declare -A T IN
quote() { printf '%q ' "$@"; }
measure() {
  local key=$1
  shift
  # --show-output: the clients print their own timing of the requests alone
  # (start-up excluded) on stderr; its median is taken from the same runs
  taskset -c 1 hyperfine -N --show-output --warmup 1 --runs "$runs" \
    --export-csv "$tmp/$key.csv" "$(quote "$@")" >"$tmp/$key.out" 2>&1 \
    || { cat "$tmp/$key.out" >&2; exit 1; }
  T[$key]=$(awk -F, 'NR == 2 { print $(NF - 4) }' "$tmp/$key.csv")
  IN[$key]=$(awk '/ GETs, / { print $(NF - 1) }' "$tmp/$key.out" | tail -n "$runs" | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
}
measure loom "$loom" bench/http_client.lua "$url" $n $conc
measure aiohttp $py bench/http_client.py "$url" $n $conc
measure curl curl --parallel --parallel-max $conc -s -K "$tmp/curl.cfg"

ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ok() { awk "BEGIN { exit !($1) }" && echo "MET   " || echo "MISSED"; }
line() { printf '%-40s %9s %15s %10s\n' "$@"; }

echo
echo "7. HTTP client: $n GETs at concurrency $conc of a 6-byte answer from nginx" \
  "$("$nginx" -v 2>&1 | sed 's|.*/||') (1 worker, CPU 0); clients on CPU 1, median of $runs runs"
line "" "wall ms" "requests ms" "loom/peer"
line "loom $($loom -e 'print(require("loom").version)') (loom.http)" "$(ms "${T[loom]}")" "${IN[loom]:-?}" "1.00"
line "aiohttp $($py -c 'import aiohttp; print(aiohttp.__version__)') + uvloop" \
  "$(ms "${T[aiohttp]}")" "${IN[aiohttp]:-?}" "$(r "${T[loom]}" "${T[aiohttp]}")"
line "curl $(curl --version | awk 'NR == 1 { print $2 }') --parallel --parallel-max $conc" \
  "$(ms "${T[curl]}")" "-" "$(r "${T[loom]}" "${T[curl]}")"
echo "(wall: the whole client process, start-up included; requests: the client's own"
echo " timing of the $n requests alone)"

echo
echo "targets"
echo "  $(ok "${T[loom]} <= 0.5 * ${T[aiohttp]}") http client: loom <= half the time of aiohttp+uvloop" \
  "($(r "${T[loom]}" "${T[aiohttp]}")x)"
echo "  $(ok "${T[loom]} <= 3 * ${T[curl]}") http client: loom within 3x of curl --parallel" \
  "($(r "${T[loom]}" "${T[curl]}")x)"
exit 0
