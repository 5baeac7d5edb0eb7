-- Issue 13: what a slow reader of a streamed body costs the server. Under
-- slowhttptest -X (500 clients reading a few bytes at a time) each waiting
-- download held its chunk string and the File's read-ahead besides the copy
-- queued for the kernel: 64 MiB RSS. The server keeps only the queued copy.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local fs = require "loom.fs"

-- Clients that never read; each streamed answer is a run of 60,000-byte
-- chunks (under the write high-water mark: the write queues, the flush waits).
local CLIENTS, CHUNK = 16, 60000

t.test("a streamed chunk is not kept as a string while it waits for the client", function()
  local started, calls = loom.future(), 0
  local srv = http.listen("127.0.0.1", 0, function()
    local first = true
    return 200, function()
      if first then
        first, calls = false, calls + 1
        if calls == CLIENTS then started:set() end
      end
      return ("x"):rep(CHUNK)
    end
  end)
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  local clients = {}
  local ok, err = pcall(function()
    for i = 1, CLIENTS do
      clients[i] = net.connect("127.0.0.1", srv.port)
      clients[i]:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n") -- and never read
    end
    -- every handler is now in its streaming loop, waiting (between its
    -- write and the next call of the body) for its client to take a chunk
    started:await()
    collectgarbage()
    collectgarbage()
    local grew = (collectgarbage("count") - before) * 1024
    t.ok(grew < CLIENTS * CHUNK / 2,
      ("the Lua heap grew by %.0f bytes for %d waiting downloads"):format(grew, CLIENTS))
  end)
  for _, c in ipairs(clients) do c:close() end
  srv:shutdown(2)
  if not ok then error(err, 0) end
end)

-- http.static: a client that never reads gets the first chunks, then the
-- server waits; a client that reads gets every byte, framed by its
-- Content-Length. The range ends at the end of the file, inside a chunk.
t.test("http.static streams in exact parts to a slow and a reading client", function()
  local dir = fs.mkdtemp()
  local size = 12 * 1024 * 1024 + 12345 -- streamed (over 8 MiB), not a multiple of 16 KiB
  do
    local f <close> = fs.open(dir .. "/big.bin", "wb")
    for i = 0, size // 65536 do
      f:write(("%08x"):format(i):rep(8192):sub(1, math.min(65536, size - i * 65536)))
    end
  end
  local srv = http.listen("127.0.0.1", 0, http.static(dir))
  local ok, err = pcall(function()
    local slow <close> = net.connect("127.0.0.1", srv.port)
    slow:write("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    t.ok(slow:read_until("\r\n\r\n"):find("^HTTP/1.1 200"), "the slow client's answer began")
    local s <close> = net.connect("127.0.0.1", srv.port)
    local first, last = 17, size - 1
    s:write(("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-\r\n\r\n"):format(first))
    local head = s:read_until("\r\n\r\n")
    t.ok(head:find("^HTTP/1.1 206"), head)
    t.ok(head:find("\r\nContent%-Length: " .. (last - first + 1) .. "\r\n"), head)
    t.ok(not head:find("chunked"), head)
    local body = s:read_exactly(last - first + 1)
    t.ok(body == fs.read_file(dir .. "/big.bin"):sub(first + 1), "the same bytes")
    -- the connection carries the next request: the body was exactly that long
    s:write("GET /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n")
    head = s:read_until("\r\n\r\n")
    t.ok(head:find("^HTTP/1.1 206"), head)
    t.eq(s:read_exactly(4), "0000")
  end)
  srv:shutdown(2)
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)

-- A file cut short while it is streamed: the answer ends short of its
-- Content-Length (the client can tell it is incomplete) and the connection closes.
t.test("http.static: a file truncated in the middle of a download", function()
  local dir = fs.mkdtemp()
  local path = dir .. "/big.bin"
  do
    local f <close> = fs.open(path, "wb")
    f:seek("set", 256 * 1024 * 1024 - 1)
    f:write("x")
  end
  local srv = http.listen("127.0.0.1", 0, http.static(dir))
  local ok, err = pcall(function()
    local s <close> = net.connect("127.0.0.1", srv.port)
    s:write("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    t.ok(s:read_until("\r\n\r\n"):find("^HTTP/1.1 200"), "the answer began")
    local got = 0
    while got < 1024 * 1024 do got = got + #s:read() end
    fs.write_file(path, "short") -- the same file, now 5 bytes
    local tail, last = 0, ""
    while true do
      local d = s:read()
      if not d then break end
      tail = tail + #d
      last = (last .. d):sub(-5)
    end
    t.ok(got + tail < 256 * 1024 * 1024, "the body ended early (short of its Content-Length)")
  end)
  srv:shutdown(2)
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)
