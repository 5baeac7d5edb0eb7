# http_server_aiohttp.py: aiohttp hello-world server (uvloop).
#   /usr/bin/python3 bench/http_server_aiohttp.py PORT
import sys, asyncio, uvloop
from aiohttp import web

async def hello(request):
    return web.Response(text="Hello, World!")

async def main():
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.install()
asyncio.run(main())
