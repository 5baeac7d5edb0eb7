#!/bin/bash
# Soak run (issue 13; not part of CI):   bench/soak.sh [minutes]   (default 10)
# One loom server takes, all at once: wrk keep-alive load, new connections,
# WebSocket echo, static range requests, SQLite writes and slow clients
# (bench/soak_client.lua). Every 10 s the server's RSS and open descriptors are
# sampled; after the first minute both must stay flat (max within 10% + 4 MiB
# of the first-minute level for RSS, +/- 32 descriptors).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mins=${1:-10}
secs=$((mins * 60))
loom=$root/build/loom
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
[ -x "$loom" ] || "$root/scripts/build"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/www"
truncate -s 64M "$tmp/www/big.bin"
echo "<h1>soak</h1>" >"$tmp/www/index.html"
port=18700
"$loom" bench/soak_server.lua $port "$tmp" >"$tmp/server.out" 2>"$tmp/server.err" &
srv=$!
for _ in $(seq 100); do grep -q ready "$tmp/server.out" 2>/dev/null && break; sleep 0.05; done
"$loom" bench/soak_client.lua $port $secs >"$tmp/client.out" 2>"$tmp/client.err" &
cli=$!
wrk -t1 -c20 -d${secs}s "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 &
wrkpid=$!
echo "soak: $mins min; t(s) RSS(MiB) fds"
samples=()
for ((t = 10; t <= secs; t += 10)); do
  sleep 10
  kill -0 $srv 2>/dev/null || { echo "the server died" >&2; cat "$tmp/server.err" >&2; exit 1; }
  rss=$(awk '/VmRSS/ { print $2 }' /proc/$srv/status)
  fds=$(ls /proc/$srv/fd | wc -l)
  samples+=("$t $rss $fds")
  printf '%5d %8.1f %5d\n' $t "$(awk -v r=$rss 'BEGIN { print r / 1024 }')" $fds
done
wait $cli $wrkpid 2>/dev/null || true
sleep 2
fds_after=$(ls /proc/$srv/fd | wc -l)
kill $srv; wait $srv 2>/dev/null || true
echo "client:"; sed 's/^/  /' "$tmp/client.out"
echo "wrk: $(awk '/Requests\/sec/ { print $2 " req/s" }' "$tmp/wrk.out")," \
  "$(awk '/requests in/ { print $1 " requests" }' "$tmp/wrk.out")"
echo "descriptors 2 s after the load: $fds_after"
printf '%s\n' "${samples[@]}" | awk '
  $1 <= 60 { if ($2 > r0) r0 = $2; if ($3 > f0) f0 = $3; next }
  { if ($2 > r1) r1 = $2; if ($3 > f1) f1 = $3 }
  END {
    flat = (r1 <= r0 * 1.10 + 4096) && (f1 <= f0 + 32)
    printf "after the first minute: RSS max %.1f MiB (first minute %.1f), fds max %d (first minute %d): %s\n",
      r1 / 1024, r0 / 1024, f1, f0, flat ? "FLAT" : "GROWING"
  }'
