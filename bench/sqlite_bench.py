"""SQLite from asyncio the usual way: Python's sqlite3 on a thread of an
executor (one thread per connection, as aiosqlite does), awaited per call.

    python3 bench/sqlite_bench.py insert [n]          n single-row inserts, one transaction
    python3 bench/sqlite_bench.py select [n] [tasks]  n point selects from concurrent tasks

Prints the time of the measured part in ms on stderr; the database is a
temporary file in WAL mode, removed at the end.
"""
import asyncio
import concurrent.futures
import os
import sqlite3
import sys
import tempfile
import time

ROWS = 10000


async def main(mode, n, ntasks):
    loop = asyncio.get_running_loop()
    fd, path = tempfile.mkstemp()
    os.close(fd)
    # One thread owns the connection, so its statements run in order.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def call(fn, *args):
        return loop.run_in_executor(pool, fn, *args)

    conn = await call(lambda: sqlite3.connect(path, isolation_level=None,
                                              check_same_thread=False))

    def query(sql, params=()):
        return conn.execute(sql, params).fetchall()

    def first(sql, params=()):
        return conn.execute(sql, params).fetchone()

    def execute(sql, params=()):
        cur = conn.execute(sql, params)
        return cur.rowcount, cur.lastrowid

    await call(query, "PRAGMA journal_mode=WAL")
    await call(conn.execute, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    if mode == "insert":
        t0 = time.perf_counter()
        await call(conn.execute, "BEGIN IMMEDIATE")
        try:
            for i in range(1, n + 1):
                await call(execute, "INSERT INTO kv(k, v) VALUES (?, ?)", (i, f"value {i}"))
            await call(conn.execute, "COMMIT")
        except BaseException:
            await call(conn.execute, "ROLLBACK")
            raise
        assert (await call(first, "SELECT count(*) FROM kv"))[0] == n
    else:
        await call(conn.execute, f"""INSERT INTO kv(k, v) SELECT x, 'value ' || x FROM
            (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
             SELECT x FROM c)""")
        t0 = time.perf_counter()
        per = n // ntasks

        async def reader(w):
            for i in range(1, per + 1):
                k = (w * 7919 + i * 104729) % ROWS + 1
                row = await call(first, "SELECT v FROM kv WHERE k = ?", (k,))
                assert row[0] == f"value {k}"

        await asyncio.gather(*(reader(w) for w in range(1, ntasks + 1)))
    print(f"{mode} {n}: {(time.perf_counter() - t0) * 1000:.1f} ms", file=sys.stderr)
    await call(conn.close)
    pool.shutdown()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "insert"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    ntasks = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    asyncio.run(main(mode, n, ntasks))
