#!/usr/bin/python3
"""A WebSocket peer on python3-websockets, for tests/websocket_test.lua.

  ws_peer.py server N   serve on 127.0.0.1, port 0; print the port, then for
                        each connection print "closed CODE REASON" when it
                        ends; exit after N connections
  ws_peer.py client URL run the conversation below against URL, printing
                        "ok STEP" per step, "closed CODE REASON" for the
                        second connection, and "done"; exit 1 on a failure

Both sides behave as tests/helpers/ws_peer.js does and as the loom side of
the test does: echo every message, except the commands "fragment" (answer
"fragmented" in three fragments), "ping" (ping, wait for the pong, answer
"pong received") and "close" (close with 4001 "peer bye").
"""
import asyncio
import sys

import websockets

BIG = 5 * 1024 * 1024


async def behave(ws):
    try:
        async for msg in ws:
            if msg == "fragment":
                await ws.send(["frag", "ment", "ed"])
            elif msg == "ping":
                waiter = await ws.ping(b"are you there")
                await asyncio.wait_for(waiter, 5)
                await ws.send("pong received")
            elif msg == "close":
                await ws.close(4001, "peer bye")
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    print("closed", ws.close_code, ws.close_reason, flush=True)


async def server(n):
    done = asyncio.Event()
    count = 0

    async def handler(ws):
        nonlocal count
        await behave(ws)
        count += 1
        if count >= n:
            done.set()

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await done.wait()


async def expect(ws, send, want, step):
    await ws.send(send)
    got = await asyncio.wait_for(ws.recv(), 10)
    if got != want:
        raise AssertionError("%s: got %r" % (step, got[:80]))
    print("ok", step, flush=True)


async def conversation(ws):
    await expect(ws, "hello", "hello", "text")
    await expect(ws, b"\x00\x01\x02\xff", b"\x00\x01\x02\xff", "binary")
    big = bytes(range(256)) * (BIG // 256)
    await expect(ws, big, big, "large")
    await expect(ws, "", "", "empty")
    await expect(ws, "h\u00e9llo \u2713 \U0001d11e", "h\u00e9llo \u2713 \U0001d11e", "utf8")
    await expect(ws, ["frag", "ment", "ed"], "fragmented", "fragments sent")
    await expect(ws, "fragment", "fragmented", "fragments received")
    waiter = await ws.ping(b"py")
    await asyncio.wait_for(waiter, 5)
    print("ok pong", flush=True)
    await expect(ws, "ping", "pong received", "ping answered")
    await ws.send("close")
    try:
        await asyncio.wait_for(ws.recv(), 10)
        raise AssertionError("no close")
    except websockets.ConnectionClosed:  # ...Error: 4001 is not 1000/1001
        pass
    if (ws.close_code, ws.close_reason) != (4001, "peer bye"):
        raise AssertionError("close: %r %r" % (ws.close_code, ws.close_reason))
    print("ok peer close", flush=True)


async def client(url):
    async with websockets.connect(url, max_size=None) as ws:
        await conversation(ws)
    async with websockets.connect(url) as ws:
        await expect(ws, "hi", "hi", "second connection")
        await ws.close(4000, "bye from python")
        print("closed", ws.close_code, ws.close_reason, flush=True)
    print("done", flush=True)


def main():
    if sys.argv[1] == "server":
        asyncio.run(server(int(sys.argv[2])))
    else:
        try:
            asyncio.run(client(sys.argv[2]))
        except Exception as e:  # reported to the test, which prints it
            print("FAIL", type(e).__name__, e, flush=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
