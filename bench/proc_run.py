# proc_run.py: asyncio.create_subprocess_exec("true") N times, at most C at once.
#   /usr/bin/python3 bench/proc_run.py [n] [concurrency] [uvloop]
import asyncio, sys

async def main(n, c):
    sem = asyncio.Semaphore(c)
    async def one():
        async with sem:
            p = await asyncio.create_subprocess_exec(
                "true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            await p.communicate()
            assert p.returncode == 0
    await asyncio.gather(*(one() for _ in range(n)))

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
c = int(sys.argv[2]) if len(sys.argv) > 2 else 50
if len(sys.argv) > 3 and sys.argv[3] == "uvloop":
    import uvloop
    uvloop.install()
asyncio.run(main(n, c))
