#!/bin/bash
# Web-framework benchmark in the TechEmpower style (issue 15):  bench/tfb.sh [secs]
# A throwaway PostgreSQL 15 with TechEmpower's World (10,000 rows) and Fortune
# tables; each server (loom, aiohttp + asyncpg, Node http + pg), pool of 10,
# pinned to CPU 1, its responses checked once, then `wrk -t1 -c256` on CPU 0
# for each test (1 s warm-up, then SECS seconds; plaintext pipelined 16 deep).
# Prints req/s per test per server and loom's ratio to each. Peers as bench/db.sh
# installs them (`pg` from npm into bench/db_peers, not committed).
# SERVERS="loom node" and TESTS="json db" pick subsets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-5}
loom=$root/build/loom
py=/usr/bin/python3
LOOM_SETUP_EXTRA="postgresql wrk python3-asyncpg python3-aiohttp python3-uvloop" \
  scripts/setup
peers=$root/bench/db_peers
[ -d "$peers/node_modules/pg" ] ||
  npm install --silent --no-save --no-package-lock --prefix "$peers" pg >/dev/null
export NODE_PATH=$peers/node_modules

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/loom-bench-tfb-XXXXXX)
as=""
if [ "$(id -u)" = 0 ]; then chown nobody "$dir"; as="setpriv --reuid=nobody --regid=nogroup --clear-groups --"; fi
$as "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 --locale=C >/dev/null
pgport=$(( 20000 + $$ % 10000 ))
$as "$bin/postgres" -D "$dir/data" -k "$dir" -p $pgport -h 127.0.0.1 -c fsync=off \
  -c synchronous_commit=off -c shared_buffers=128MB -c max_connections=100 \
  >"$dir/pg.log" 2>&1 &
pgpid=$!
cleanup() {
  for p in ${PID[@]:-}; do kill "$p" 2>/dev/null; done
  kill -INT $pgpid 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
  psql -h "$dir" -p $pgport -U postgres -c 'select 1' postgres >/dev/null 2>&1 && break
  sleep 0.1
done
psql -q -v ON_ERROR_STOP=1 -h "$dir" -p $pgport -U postgres postgres >/dev/null <<'SQL'
CREATE TABLE world (id integer NOT NULL PRIMARY KEY, randomnumber integer NOT NULL DEFAULT 0);
INSERT INTO world SELECT g, floor(random() * 10000 + 1) FROM generate_series(1, 10000) g;
CREATE TABLE fortune (id integer NOT NULL PRIMARY KEY, message varchar(2048) NOT NULL);
INSERT INTO fortune (id, message) VALUES
 (1, 'fortune: No such file or directory'),
 (2, 'A computer scientist is someone who fixes things that aren''t broken.'),
 (3, 'After enough decimal places, nobody gives a damn.'),
 (4, 'A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1'),
 (5, 'A computer program does what you tell it to do, not what you want it to do.'),
 (6, 'Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen'),
 (7, 'Any program that runs right is obsolete.'),
 (8, 'A list is only as strong as its weakest link. — Donald Knuth'),
 (9, 'Feature: A bug with seniority.'),
 (10, 'Computers make very fast, very accurate mistakes.'),
 (11, '<script>alert("This should not be displayed in a browser alert box.");</script>'),
 (12, 'フレームワークのベンチマーク');
VACUUM ANALYZE;
SQL
url="postgresql://postgres@127.0.0.1:$pgport/postgres"

port=19000
declare -A PID PORT
# start NAME: the server on a new port pinned to CPU 1
start() {
  port=$((port + 1))
  case $1 in
    loom) cmd=("$loom" bench/tfb_loom.lua) ;;
    aiohttp) cmd=($py bench/tfb_aiohttp.py) ;;
    node) cmd=(node bench/tfb_node.js) ;;
  esac
  taskset -c 1 "${cmd[@]}" $port "$url" 10 >"$dir/out.$1" 2>"$dir/err.$1" &
  PID[$1]=$!
  PORT[$1]=$port
  for _ in $(seq 200); do grep -q ready "$dir/out.$1" 2>/dev/null && return; sleep 0.05; done
  echo "server $1 did not start" >&2; cat "$dir/err.$1" >&2; exit 1
}
# check NAME: each test's answer once, before timing
check() {
  local b="http://127.0.0.1:${PORT[$1]}"
  fail() { echo "$1: $2" >&2; cat "$dir/err.$1" >&2; exit 1; }
  $py - "$b" "$1" "$url" <<'PY' || fail "$1" "wrong response"
import sys, json, urllib.request, re
base, name = sys.argv[1], sys.argv[2]
def get(path):
    with urllib.request.urlopen(base + path) as r:
        h = {k.lower(): v for k, v in r.headers.items()}
        assert r.status == 200, (path, r.status)
        for k in ("server", "date", "content-type", "content-length"):
            assert k in h, (path, "no header " + k)
        return h, r.read()
def world(w):
    assert set(w) == {"id", "randomNumber"}, w
    assert 1 <= w["id"] <= 10000 and 1 <= w["randomNumber"] <= 10000, w
h, b = get("/json")
assert json.loads(b) == {"message": "Hello, World!"} and h["content-type"].startswith("application/json")
h, b = get("/plaintext")
assert b == b"Hello, World!" and h["content-type"].startswith("text/plain")
world(json.loads(get("/db")[1]))
for q, n in (("20", 20), ("0", 1), ("foo", 1), ("501", 500), ("", 1)):
    v = json.loads(get("/queries?queries=" + q)[1])
    assert isinstance(v, list) and len(v) == n, (q, len(v))
    for w in v: world(w)
v = json.loads(get("/updates?queries=20")[1])
assert len(v) == 20
for w in v: world(w)
import asyncio, asyncpg
async def stored():  # the new numbers are in the table
    c = await asyncpg.connect(sys.argv[3])
    r = await c.fetch("SELECT id, randomnumber FROM world WHERE id = any($1::int[])", [w["id"] for w in v])
    await c.close()
    return {x["id"]: x["randomnumber"] for x in r}
db = asyncio.run(stored())
ids = [w["id"] for w in v]  # a repeated id may keep either of its numbers
assert all(db[w["id"]] == w["randomNumber"] for w in v if ids.count(w["id"]) == 1), (db, v)
h, b = get("/fortunes")
assert h["content-type"].lower().replace(" ", "") == "text/html;charset=utf-8", h
t = b.decode()
rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", t)
assert len(rows) == 13, rows
assert rows[0] == ("11", "&lt;script&gt;alert(&quot;This should not be displayed in a browser alert box.&quot;);&lt;/script&gt;"), rows[0]
assert ("0", "Additional fortune added at request time.") in rows
assert rows[-1] == ("12", "フレームワークのベンチマーク")
assert ("2", "A computer scientist is someone who fixes things that aren&#39;t broken.") in rows or \
       ("2", "A computer scientist is someone who fixes things that aren&#x27;t broken.") in rows
assert t.startswith("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>")
assert t.endswith("</table></body></html>")
PY
}

declare -A RPS CPU PGC
servers=${SERVERS:-loom aiohttp node}
tests=${TESTS:-json db queries fortunes updates plaintext}
path() {
  case $1 in
    json) echo /json ;; db) echo /db ;; queries) echo "/queries?queries=20" ;;
    fortunes) echo /fortunes ;; updates) echo "/updates?queries=20" ;;
    plaintext) echo /plaintext ;;
  esac
}
# CPU seconds (user + system) of a process and of PostgreSQL's processes
hz=$(getconf CLK_TCK)
ticks() { awk '{ s += $14 + $15 } END { print s }' "$@" 2>/dev/null; }
pgticks() { ticks /proc/$pgpid/stat $(pgrep -P $pgpid | sed 's|.*|/proc/&/stat|'); }
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $servers; do start $s; check $s; done
# the tests in turn, each server in turn within a test (the machine's load
# drifts alike for all three)
# ROUNDS=n: each figure is the median of n runs (rounds interleaved)
rounds=${ROUNDS:-1}
for r in $(seq $rounds); do
for t in $tests; do
  for s in $servers; do
    u="http://127.0.0.1:${PORT[$s]}$(path $t)"
    extra=()
    [ $t = plaintext ] && extra=(-s bench/tfb_pipeline.lua)
    w() { taskset -c 0 wrk -t1 -c256 -d$1 --timeout 10s -H "Accept: */*" "${extra[@]}" "$u" ${extra:+-- 16}; }
    w 1s >/dev/null
    a=$(ticks /proc/${PID[$s]}/stat); pa=$(pgticks)
    w ${secs}s >"$dir/wrk"
    b=$(ticks /proc/${PID[$s]}/stat); pb=$(pgticks)
    { grep -h "Non-2xx\|Socket errors" "$dir/wrk" || true; } | sed "s/^ */note: $s $t: /" >&2
    n=$(awk '/requests in/ { print $1 }' "$dir/wrk")
    RPS[$s.$t]+=" $(awk '/Requests\/sec/ { printf "%.0f", $2 }' "$dir/wrk")"
    CPU[$s.$t]+=" $(awk -v a=$a -v b=$b -v hz=$hz -v n=$n 'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')"
    PGC[$s.$t]+=" $(awk -v a=$pa -v b=$pb -v hz=$hz -v n=$n 'BEGIN { printf "%.1f", (b - a) / hz / n * 1e6 }')"
  done
done
done
# the median of each list of figures
med() { echo $1 | tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for k in "${!RPS[@]}"; do
  RPS[$k]=$(med "${RPS[$k]}"); CPU[$k]=$(med "${CPU[$k]}"); PGC[$k]=$(med "${PGC[$k]}")
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "TechEmpower-style tests, PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1, pool of 10;"
echo "server on CPU 1, wrk -t1 -c256 -d${secs}s --timeout 10s on CPU 0 (plaintext pipelined 16 deep);"
echo "median of $rounds run(s)"
echo "load average before: $load0, after: $load ($(nproc) CPUs)"
echo "peers: node $(node --version), pg $(node -p 'require("pg/package.json").version'), python $($py -c 'import sys, aiohttp, asyncpg
try:
    import uvloop; u = " uvloop " + uvloop.__version__
except ImportError:
    u = ", no uvloop"
print(sys.version.split()[0], "aiohttp", aiohttp.__version__, "asyncpg", asyncpg.__version__ + u)')"
printf '%-22s' "req/s"
for s in $servers; do printf '%12s' "$s"; done
for s in $servers; do [ $s = loom ] || printf '%14s' "loom/$s"; done
echo
for t in $tests; do
  case $t in queries) n="queries (20)" ;; updates) n="updates (20)" ;; *) n=$t ;; esac
  printf '%-22s' "$n"
  for s in $servers; do printf '%12s' "${RPS[$s.$t]:--}"; done
  for s in $servers; do
    [ $s = loom ] && continue
    printf '%14s' "$(awk -v a="${RPS[loom.$t]:-0}" -v b="${RPS[$s.$t]:-0}" \
      'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
  done
  echo
done
echo
echo "server CPU us/request (PostgreSQL's CPU us/request)"
for t in $tests; do
  case $t in queries) n="queries (20)" ;; updates) n="updates (20)" ;; *) n=$t ;; esac
  printf '%-22s' "$n"
  for s in $servers; do printf '%18s' "${CPU[$s.$t]} (${PGC[$s.$t]})"; done
  echo
done
