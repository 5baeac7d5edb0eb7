# tfb_aiohttp.py: the TechEmpower tests on aiohttp + asyncpg (uvloop if
# installed), written as TechEmpower's aiohttp entry does, for bench/tfb.sh.
#   /usr/bin/python3 bench/tfb_aiohttp.py PORT DSN [POOL]
import sys, asyncio, random
from operator import itemgetter
from html import escape
import asyncpg
from aiohttp import web
try:
    import uvloop
except ImportError:
    uvloop = None

READ = "SELECT id, randomnumber FROM world WHERE id = $1"
WRITE = "UPDATE world SET randomnumber = $1 WHERE id = $2"
ADDED = (0, "Additional fortune added at request time.")
SERVER = {"Server": "aiohttp"}


def count(request):
    try:
        n = int(request.query.get("queries", "1"))
    except ValueError:
        return 1
    return min(max(n, 1), 500)


def jsonr(body):
    return web.Response(text=body, content_type="application/json", headers=SERVER)


import json as _json
dumps = _json.dumps


async def j(request):
    return jsonr(dumps({"message": "Hello, World!"}))


async def plaintext(request):
    return web.Response(body=b"Hello, World!", content_type="text/plain", headers=SERVER)


async def db(request):
    async with request.app["pg"].acquire() as conn:
        r = await conn.fetchrow(READ, random.randint(1, 10000))
    return jsonr(dumps({"id": r["id"], "randomNumber": r["randomnumber"]}))


async def queries(request):
    n = count(request)
    ids = [random.randint(1, 10000) for _ in range(n)]
    out = []
    async with request.app["pg"].acquire() as conn:
        st = await conn.prepare(READ)
        for i in ids:
            r = await st.fetchrow(i)
            out.append({"id": r["id"], "randomNumber": r["randomnumber"]})
    return jsonr(dumps(out))


async def updates(request):
    n = count(request)
    ids = [random.randint(1, 10000) for _ in range(n)]
    out = []
    async with request.app["pg"].acquire() as conn:
        st = await conn.prepare(READ)
        for i in ids:
            r = await st.fetchrow(i)
            out.append({"id": r["id"], "randomNumber": random.randint(1, 10000)})
        pairs = sorted(((w["randomNumber"], w["id"]) for w in out), key=itemgetter(1))
        await conn.executemany(WRITE, pairs)
    return jsonr(dumps(out))


async def fortunes(request):
    async with request.app["pg"].acquire() as conn:
        rows = await conn.fetch("SELECT id, message FROM fortune")
    rows = [tuple(r) for r in rows]
    rows.append(ADDED)
    rows.sort(key=itemgetter(1))
    body = ["<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
            "<tr><th>id</th><th>message</th></tr>"]
    for i, m in rows:
        body.append("<tr><td>%d</td><td>%s</td></tr>" % (i, escape(m)))
    body.append("</table></body></html>")
    return web.Response(text="".join(body), content_type="text/html", charset="utf-8",
                        headers=SERVER)


async def main():
    port, dsn = int(sys.argv[1]), sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    app = web.Application()
    app["pg"] = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
    for path, h in (("/json", j), ("/plaintext", plaintext), ("/db", db),
                    ("/queries", queries), ("/updates", updates), ("/fortunes", fortunes)):
        app.router.add_get(path, h)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

if uvloop:
    uvloop.install()
asyncio.run(main())
