#!/bin/sh
# PostgreSQL and Redis client benchmarks: loom against asyncpg and
# node-postgres, ioredis and redis-py's asyncio client, and redis-benchmark.
# Starts a throwaway postgres (initdb in a temporary directory, as nobody
# when run as root) and redis-server, runs each client 3 times, prints the
# median operations per second, then stops the servers.
#   bench/db.sh [LOOM]      (default build/loom)
# Peers: apt python3-asyncpg python3-redis postgresql redis-server; node and
# npm (as scripts/bench installs them); `pg` and `ioredis` go into bench/db_peers (not
# committed).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
LOOM=${1:-$root/build/loom}
PY=/usr/bin/python3
LOOM_SETUP_EXTRA="postgresql redis-server python3-asyncpg python3-redis" \
  "$root/scripts/setup"
peers=$root/bench/db_peers
[ -d "$peers/node_modules/ioredis" ] && [ -d "$peers/node_modules/pg" ] ||
  npm install --silent --no-save --no-package-lock --prefix "$peers" pg ioredis >/dev/null
export NODE_PATH=$peers/node_modules

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/loom-bench-db-XXXXXX)
as=""
if [ "$(id -u)" = 0 ]; then chown nobody "$dir"; as="setpriv --reuid=nobody --regid=nogroup --clear-groups --"; fi
$as "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null
pgport=$(( 20000 + $$ % 10000 ))
rport=$(( pgport + 1 ))
$as "$bin/postgres" -D "$dir/data" -k "$dir" -p $pgport -h 127.0.0.1 -c fsync=off \
  -c synchronous_commit=off -c shared_buffers=128MB -c max_connections=100 \
  >"$dir/pg.log" 2>&1 &
pgpid=$!
redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --loglevel warning >/dev/null 2>&1 &
rpid=$!
cleanup() { kill -INT $pgpid 2>/dev/null; kill $rpid 2>/dev/null; wait; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do
  psql -h "$dir" -p $pgport -U postgres -c 'select 1' postgres >/dev/null 2>&1 && break
  sleep 0.1
done
psql -q -h "$dir" -p $pgport -U postgres postgres -c "create table bench (id int primary key,
  name text); insert into bench select g, 'name ' || g from generate_series(1, 10000) g;
  analyze bench" >/dev/null
url="postgresql://postgres@127.0.0.1:$pgport/postgres"

# median of 3 runs of: command... -> the given line's ops/s
median() {
  what=$1; shift
  for _ in 1 2 3; do "$@" | awk -v w="$what" '$1 == w { print $4 }'; done | sort -n | sed -n 2p
}

echo "PostgreSQL: 50000 single-row SELECT ... WHERE id = \$1, 50 tasks, pool of 10 (queries/s)"
printf '  %-28s %8s\n' "loom" "$(median select "$LOOM" "$root/bench/pg_bench.lua" "$url")"
printf '  %-28s %8s\n' "asyncpg" "$(median select $PY "$root/bench/pg_bench.py" "$url")"
printf '  %-28s %8s\n' "asyncpg, no reset on release" "$(median select $PY "$root/bench/pg_bench.py" "$url" noreset)"
printf '  %-28s %8s\n' "node-postgres" "$(median select node "$root/bench/pg_bench.js" "$url")"
echo "PostgreSQL: COPY in of 100000 rows (rows/s)"
printf '  %-28s %8s\n' "loom" "$(median copy "$LOOM" "$root/bench/pg_bench.lua" "$url")"
printf '  %-28s %8s\n' "asyncpg" "$(median copy $PY "$root/bench/pg_bench.py" "$url")"

echo "Redis: 100000 GET/SET from 50 tasks (commands/s)"
printf '  %-28s %8s\n' "loom (one client)" "$(median getset "$LOOM" "$root/bench/redis_bench.lua" "redis://127.0.0.1:$rport")"
printf '  %-28s %8s\n' "ioredis" "$(median getset node "$root/bench/redis_bench.js" $rport)"
printf '  %-28s %8s\n' "ioredis, autopipelining" "$(median getset node "$root/bench/redis_bench.js" $rport auto)"
printf '  %-28s %8s\n' "redis-py asyncio" "$(median getset $PY "$root/bench/redis_bench.py" 127.0.0.1 $rport)"
rb() {
  redis-benchmark -p $rport -c 50 -n 100000 -P 1 -t set,get -q 2>/dev/null |
    tr '\r' '\n' | awk '/requests per second/ { gsub(":", "", $1); s += 1 / $2; n++ }
      END { printf "getset 100000 0 %.0f\n", n / s }'
}
printf '  %-28s %8s\n' "redis-benchmark -c 50 -P 1" "$(median getset rb)"
