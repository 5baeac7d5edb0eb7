# http_server_streams.py: asyncio streams + uvloop hello-world HTTP server.
#   /usr/bin/python3 bench/http_server_streams.py PORT
import asyncio, sys, uvloop

BODY = b"Hello, World!"
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESP)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()

async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await srv.serve_forever()

uvloop.install()
asyncio.run(main())
