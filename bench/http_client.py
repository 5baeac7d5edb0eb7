"""HTTP client load: n GETs of one URL by `conc` asyncio tasks sharing one
aiohttp ClientSession (its keep-alive pool), on uvloop; checks every status
and prints the time the requests took (start-up excluded) on stderr.
    /usr/bin/python3 bench/http_client.py URL [n] [conc]
"""
import asyncio
import sys
import time

import aiohttp
import uvloop


async def main(url, n, conc):
    left = n
    done = 0
    size = 0
    conn = aiohttp.TCPConnector(limit=conc)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker():
            nonlocal left, done, size
            while left > 0:
                left -= 1
                async with session.get(url) as res:
                    body = await res.read()
                    assert res.status == 200, res.status
                    done += 1
                    size += len(body)

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(conc)))
        took = time.monotonic() - start
    assert done == n
    print(f"aiohttp: {done} GETs, {size} body bytes, {took * 1000:.1f} ms", file=sys.stderr)


if __name__ == "__main__":
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    conc = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    uvloop.install()
    asyncio.run(main(url, n, conc))
