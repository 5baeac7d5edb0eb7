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

# run NAME command...: 3 runs, their output kept in $dir/NAME
run3() {
  name=$1; shift
  for _ in 1 2 3; do "$@"; done > "$dir/$name"
}
# med NAME WHAT: the median ops/s of the lines "WHAT n secs ops" of NAME's runs
med() {
  awk -v w="$2" '$1 == w { print $4 }' "$dir/$1" | sort -n | sed -n 2p
}
row() { printf '  %-30s %8s\n' "$1" "$(med "$2" "$3")"; }

run3 loom_pg "$LOOM" "$root/bench/pg_bench.lua" "$url"
run3 asyncpg $PY "$root/bench/pg_bench.py" "$url"
run3 asyncpg_noreset $PY "$root/bench/pg_bench.py" "$url" noreset
run3 node_pg node "$root/bench/pg_bench.js" "$url"
echo "PostgreSQL: 50000 single-row SELECT ... WHERE id = \$1, 50 tasks, pool of 10 (queries/s)"
row loom loom_pg select
row asyncpg asyncpg select
row "asyncpg, no reset on release" asyncpg_noreset select
row node-postgres node_pg select
echo "PostgreSQL: COPY in of 100000 rows, made while streaming (rows/s)"
row loom loom_pg copy
row asyncpg asyncpg_noreset copy
echo "PostgreSQL: the same COPY, rows made before the clock starts (rows/s)"
row loom loom_pg copyready
row asyncpg asyncpg_noreset copyready

rurl="redis://127.0.0.1:$rport"
run3 loom_redis "$LOOM" "$root/bench/redis_bench.lua" "$rurl"
run3 ioredis node "$root/bench/redis_bench.js" $rport
run3 ioredis_auto node "$root/bench/redis_bench.js" $rport auto
run3 redis_py $PY "$root/bench/redis_bench.py" 127.0.0.1 $rport
rb() {
  redis-benchmark -p $rport -c 50 -n 100000 -P 1 -t set,get -q 2>/dev/null |
    tr '\r' '\n' | awk '/requests per second/ { gsub(":", "", $1); s += 1 / $2; n++ }
      END { printf "getset 100000 0 %.0f\n", n / s }'
}
run3 redis_benchmark rb
echo "Redis: 100000 GET/SET from 50 tasks (commands/s)"
row "loom (one client)" loom_redis getset
row ioredis ioredis getset
row "ioredis, autopipelining" ioredis_auto getset
row "redis-py asyncio" redis_py getset
row "redis-benchmark -c 50 -P 1" redis_benchmark getset
