-- loom against peers it did not write: python3's socket module
-- (tests/helpers/peer.py) and curl. TLS peers are in the TLS tests.
local loom = require "loom"
local net = require "loom.net"
local t = require "loom.test"
local H = require "helpers.net"

local function need_python()
  if not H.python() then t.skip("no python3") end
end

t.test("loom client, python3 echo server (IPv4 and IPv6)", function()
  need_python()
  for _, host in ipairs { "127.0.0.1", "::1" } do
    local child, port = H.peer_server("echo", "1", host)
    local c = net.connect(host, port)
    c:write("line one\r\n", "line two\n")
    t.eq(c:read_line(), "line one")
    t.eq(c:read_line(), "line two")
    for i = 1, 100 do c:write(string.char(32 + i)) end -- 1-byte writes
    t.eq(#c:read_exactly(100), 100)
    c:write("unterminated")
    c:shutdown() -- python sees the end, echoes the rest and closes
    t.eq(c:read_all(), "unterminated")
    c:close()
    local out, status = child:finish()
    t.eq(status, 0, out)
  end
end)

-- The python client runs on its own: we read its output only once our
-- handler is done, so the loop is never blocked while it needs to run.
local function python_client(port, data, how)
  return H.peer("client", tostring(port), data, "127.0.0.1", how or "")
end

t.test("python3 client sends byte by byte to a loom line server, then half-closes", function()
  need_python()
  local done = loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    local n = 0
    repeat
      local line = s:read_line()
      if line then
        n = n + 1
        s:write(n, ":", line:upper(), "\n")
      end
    until not line
    s:write("end after ", n, " lines\n")
    done:set()
  end)
  local child = python_client(srv.port, "alpha\r\nbeta\n\ngamma", "bytewise")
  H.wait(done, 10, "the handler")
  local out, status = child:finish()
  t.eq(status, 0, out)
  t.eq(out, "1:ALPHA\n2:BETA\n3:\n4:GAMMA\nend after 4 lines\n")
  srv:shutdown(1)
end)

t.test("python3 client: read_until and read_exactly on its data", function()
  need_python()
  local done, got = loom.event(), {}
  local srv = net.listen("127.0.0.1", 0, function(s)
    got.head = s:read_until("\r\n\r\n")
    got.len = s:read_exactly(4)
    got.body = s:read_exactly(tonumber(got.len))
    local ok, err = pcall(s.read_exactly, s, 1)
    got.after = ok and "more" or err.kind
    s:write("ok")
    done:set()
  end)
  local child = python_client(srv.port, "GET x\r\nA: b\r\n\r\n0013hello, world!")
  H.wait(done, 10, "the handler")
  local out, status = child:finish()
  t.eq(status, 0, out)
  t.eq(out, "ok")
  t.eq(got, { head = "GET x\r\nA: b", len = "0013", body = "hello, world!", after = "eof" })
  srv:shutdown(1)
end)

t.test("python3 server resets the connection mid-read: io ECONNRESET", function()
  need_python()
  local child, port = H.peer_server("reset")
  local c = net.connect("127.0.0.1", port)
  t.eq(c:read_exactly(7), "partial")
  c:write("go\n") -- the peer now closes with SO_LINGER 0
  local err = t.raises(function() c:read_all() end, "io")
  t.eq(err.code, "ECONNRESET")
  t.raises(function() c:read() end, "io")
  c:close()
  local out, status = child:finish()
  t.eq(status, 0, out)
end)

t.test("32 MiB to a slow python3 reader arrive whole, the writer held back", function()
  need_python()
  local block = string.rep("0123456789abcdef", 4096) -- 64 KiB
  local n = 512
  local want = H.run(("%s -c %s"):format(H.python(), H.sh_quote(
    ("import hashlib; print(%d * 65536, hashlib.sha256(b'0123456789abcdef' * 4096 * %d).hexdigest())")
      :format(n, n))))
  local child, port = H.peer_server("count")
  local c = net.connect("127.0.0.1", port)
  local waited = 0
  for _ = 1, n do
    local t0 = loom.now()
    c:write(block)
    if loom.now() - t0 > 0.0005 then waited = waited + 1 end
  end
  c:close() -- flushes, then python sees the end and prints
  local out, status = child:finish()
  t.eq(status, 0, out)
  t.eq(out, want)
  t.ok(waited > 0, "no write ever waited for the slow reader")
end)

-- A tiny HTTP/1.1 responder for curl: answers 100-continue, reads the
-- body by Content-Length, and closes after each response. `done` is set
-- once the response is written: curl then needs nothing more from us, and
-- the test may block on curl's output.
local function http_server(host, on_request, done)
  return net.listen(host, 0, function(s)
    local request = s:read_line()
    local headers = {}
    repeat
      local line = s:read_line()
      local k, v = (line or ""):match("^([^:]+):%s*(.*)$")
      if k then headers[k:lower()] = v end
    until not line or line == ""
    if headers.expect == "100-continue" then s:write("HTTP/1.1 100 Continue\r\n\r\n") end
    local body = ""
    local len = tonumber(headers["content-length"])
    if len then
      local parts, left = {}, len
      while left > 0 do
        local chunk = s:read(math.min(left, 65536))
        if not chunk then break end
        parts[#parts + 1] = chunk
        left = left - #chunk
        loom.sleep(0) -- read slowly: curl must wait for us
      end
      body = table.concat(parts)
    end
    local answer = on_request(request, headers, body)
    s:write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ", #answer,
      "\r\nConnection: close\r\n\r\n", answer)
    s:close()
    done:set()
  end)
end

local function curl(args)
  return H.spawn("curl -sS --max-time 10 " .. args)
end

t.test("curl GET against a loom HTTP responder (IPv4 and IPv6)", function()
  if not H.have("curl") then t.skip("no curl") end
  for _, host in ipairs { "127.0.0.1", "::1" } do
    local done, seen = loom.event(), {}
    local srv = http_server(host, function(request, headers)
      seen.request, seen.host = request, headers.host
      return "hello from loom\n"
    end, done)
    local url = host:find(":") and ("http://[%s]:%d/path?q=1"):format(host, srv.port)
      or ("http://%s:%d/path?q=1"):format(host, srv.port)
    local child = curl(H.sh_quote(url))
    H.wait(done, 10, "curl's request")
    local out, status = child:finish()
    t.eq(status, 0, out)
    t.eq(out, "hello from loom\n")
    t.eq(seen.request, "GET /path?q=1 HTTP/1.1")
    t.eq(seen.host, url:match("//([^/]+)/"))
    srv:shutdown(1)
  end
end)

t.test("curl uploads 4 MiB to a loom server that reads slowly", function()
  if not H.have("curl") then t.skip("no curl") end
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  local block = string.rep("u", 65536)
  for _ = 1, 64 do f:write(block) end
  f:close()
  local done, got = loom.event(), nil
  local srv = http_server("127.0.0.1", function(_, _, body)
    got = body
    return ("received %d bytes\n"):format(#body)
  end, done)
  local child = curl(("--data-binary @%s http://127.0.0.1:%d/upload"):format(
    H.sh_quote(path), srv.port))
  H.wait(done, 10, "the upload")
  local out, status = child:finish()
  os.remove(path)
  t.eq(status, 0, out)
  t.eq(out, "received 4194304 bytes\n")
  t.eq(got, string.rep(block, 64))
  srv:shutdown(1)
end)
