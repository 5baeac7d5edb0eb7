"""Spawn N tasks that each sleep 10 ms, then await them all.

    python3 bench/tasks_sleep.py [n] [asyncio|uvloop]
"""
import asyncio
import sys


async def sleeper():
    await asyncio.sleep(0.01)


async def main(n):
    tasks = [asyncio.create_task(sleeper()) for _ in range(n)]
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    loop = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(n))
