# asyncpg peer of pg_bench.lua: usage python3 pg_bench.py DSN [noreset]
# asyncpg's pool resets a connection (one more statement) each time it is
# given back; "noreset" turns that off, as loom's pool does not reset.
import asyncio, sys, time
import asyncpg

class NoReset(asyncpg.Connection):
    def _get_reset_query(self):
        return ""

async def main():
    dsn = sys.argv[1]
    n, tasks, size = 50000, 50, 10
    cls = NoReset if sys.argv[2:3] == ["noreset"] else asyncpg.Connection
    pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size, connection_class=cls)
    per = n // tasks
    async def worker(i):
        for j in range(1, per + 1):
            id_ = (i * per + j) % 10000 + 1
            row = await pool.fetchrow("select id, name from bench where id = $1", id_)
            assert row["id"] == id_
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(1, tasks + 1)))
    dt = time.perf_counter() - t0
    print("select %d %.3f %.0f" % (n, dt, n / dt))
    c = await asyncpg.connect(dsn)
    await c.execute("drop table if exists bench_copy; create table bench_copy (id int, name text, v float8)")
    t0 = time.perf_counter()
    async def source():
        for i in range(0, 100000, 1000):
            yield "".join("%d\tname %d\t%s\n" % (k, k, k * 0.5) for k in range(i + 1, i + 1001)).encode()
    await c.copy_to_table("bench_copy", source=source())
    dt = time.perf_counter() - t0
    print("copy %d %.3f %.0f" % (100000, dt, 100000 / dt))
    # the same rows made before the clock starts: the client's own cost
    chunks = ["".join("%d\tname %d\t%s\n" % (k, k, k * 0.5) for k in range(i + 1, i + 1001)).encode()
              for i in range(0, 100000, 1000)]
    await c.execute("truncate bench_copy")
    async def ready():
        for ch in chunks:
            yield ch
    t0 = time.perf_counter()
    await c.copy_to_table("bench_copy", source=ready())
    dt = time.perf_counter() - t0
    print("copyready %d %.3f %.0f" % (100000, dt, 100000 / dt))
    await c.close()
    await pool.close()

asyncio.run(main())
