"""Hand N values from a producer task to a consumer task through asyncio.Queue.

    python3 bench/queue_handoff.py [n] [maxsize] [asyncio|uvloop]

maxsize = 0 (default) is unbounded; maxsize = 1 makes every put wait for the
consumer.
"""
import asyncio
import sys


async def producer(q, n):
    for i in range(1, n + 1):
        await q.put(i)


async def consumer(q, n):
    total = 0
    for _ in range(n):
        total += await q.get()
    return total


async def main(n, maxsize):
    q = asyncio.Queue(maxsize)
    _, total = await asyncio.gather(producer(q, n), consumer(q, n))
    assert total == n * (n + 1) // 2, "lost or duplicated values"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    maxsize = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    loop = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(n, maxsize))
