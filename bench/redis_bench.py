# redis-py asyncio peer of redis_bench.lua: usage python3 redis_bench.py HOST PORT
import asyncio, sys, time
import redis.asyncio as aioredis

async def main():
    n, tasks = 100000, 50
    r = aioredis.Redis(host=sys.argv[1], port=int(sys.argv[2]), max_connections=tasks)
    await r.ping()
    per = n // tasks // 2
    async def worker(i):
        key = "bench:%d" % i
        for j in range(1, per + 1):
            await r.set(key, j)
            assert (await r.get(key)) == str(j).encode()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(1, tasks + 1)))
    dt = time.perf_counter() - t0
    print("getset %d %.3f %.0f" % (n, dt, n / dt))
    await r.close()

asyncio.run(main())
