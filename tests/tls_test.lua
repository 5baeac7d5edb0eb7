-- loom.tls (spec section 3, the tls options of net.connect and net.listen):
-- handshakes, verification, ALPN, client certificates, close_notify, bad
-- peers, cancellation, and real peers (openssl s_server/s_client, curl).
-- The certificates are made at load time with the openssl command.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local tls = require "loom.tls"

local function sh(cmd) return os.execute("(" .. cmd .. ") >/dev/null 2>&1") == true end

local HAVE_OPENSSL = sh("command -v openssl")
local HAVE_CURL = sh("command -v curl")

-- ---- certificates ----

local DIR
local function path(name) return DIR .. "/" .. name end

-- A CA, certificates it signs (localhost and 127.0.0.1; a wrong name; a
-- client), one it signed long expired, and a second CA with a client.
local function make_certificates()
  DIR = io.popen("mktemp -d"):read("l")
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  local leaf = "-days 30 -addext basicConstraints=critical,CA:FALSE"
  local localhost = "-addext subjectAltName=DNS:localhost,IP:127.0.0.1"
  local cmds = {
    ("openssl req -x509 %s -keyout ca.key -out ca.pem -days 30 -subj '/CN=loom test CA'")
      :format(ec),
    ("openssl req -x509 %s -keyout other.key -out other.pem -days 30 -subj '/CN=other CA'")
      :format(ec),
    ("openssl req -x509 %s -keyout server.key -out server.pem %s -subj /CN=localhost %s"
      .. " -CA ca.pem -CAkey ca.key"):format(ec, leaf, localhost),
    ("openssl req -x509 %s -keyout wrong.key -out wrong.pem %s -subj /CN=wrong.example"
      .. " -addext subjectAltName=DNS:wrong.example -CA ca.pem -CAkey ca.key")
      :format(ec, leaf),
    ("openssl req -x509 %s -keyout client.key -out client.pem %s -subj '/CN=loom client'"
      .. " -CA ca.pem -CAkey ca.key"):format(ec, leaf),
    ("openssl req -x509 %s -keyout rogue.key -out rogue.pem %s -subj '/CN=rogue client'"
      .. " -CA other.pem -CAkey other.key"):format(ec, leaf),
    -- openssl 3.0's x509 cannot backdate; its ca command can
    ("openssl req %s -keyout expired.key -out expired.csr -subj /CN=localhost %s")
      :format(ec, localhost),
    "printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\nnew_certs_dir=.\\n"
      .. "certificate=ca.pem\\nprivate_key=ca.key\\ndefault_md=sha256\\npolicy=p\\n"
      .. "serial=serial\\ncopy_extensions=copy\\nunique_subject=no\\n"
      .. "[p]\\ncommonName=supplied\\n' > ca.cnf",
    ": > index.txt && echo 01 > serial",
    "openssl ca -batch -config ca.cnf -in expired.csr -out expired.pem -notext"
      .. " -startdate 20200101000000Z -enddate 20200102000000Z",
  }
  for _, cmd in ipairs(cmds) do
    if not sh("cd " .. DIR .. " && " .. cmd) then return false end
  end
  return true
end

local SKIP = not HAVE_OPENSSL and "the openssl command is missing"
  or not make_certificates() and "making the test certificates failed" or nil

-- A test that needs the certificates (t.test: one that does not).
local function test(name, fn, opts)
  opts = opts or {}
  opts.skip = opts.skip or SKIP
  t.test(name, fn, opts)
end

local CA = function() return { ca = path("ca.pem") } end
local function server_tls(name, extra)
  local o = { cert = path((name or "server") .. ".pem"), key = path((name or "server") .. ".key") }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- ---- helpers ----

local function echo(s)
  while true do
    local d = s:read()
    if not d then break end
    s:write(d)
  end
end

-- Run fn(port) with a TLS server running handler; shut it down after.
local function with_server(handler, tls_opts, fn)
  local srv = net.listen("127.0.0.1", 0, handler, { tls = tls_opts })
  local ok, err = pcall(fn, srv.port)
  srv:shutdown()
  if not ok then error(err, 0) end
end

-- Run fn(port, results) with a plain server whose handler does the server
-- side of the handshake itself: results:get() is "ok" or its error.
local function with_handshakes(tls_opts, fn)
  local ctx = tls.server_context(tls_opts)
  local results = loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s)
    local ok, err = pcall(tls.server, s, ctx)
    results:put(ok and "ok" or err)
  end)
  local ok, err = pcall(fn, srv.port, results)
  srv:shutdown()
  if not ok then error(err, 0) end
end

-- Run fn with io.stderr captured (the server logs failed handshakes);
-- returns what was written.
local function capture_stderr(fn)
  local real, text = io.stderr, {}
  io.stderr = { write = function(self, ...)
    for _, v in ipairs { ... } do text[#text + 1] = tostring(v) end
    return self
  end }
  local ok, err = pcall(fn)
  io.stderr = real
  if not ok then error(err, 0) end
  return table.concat(text)
end

-- Connect, run fn(stream), always close.
local function with_client(host, port, tls_opts, fn)
  local s <close> = net.connect(host, port, { tls = tls_opts })
  return fn(s)
end

local function connect_error(host, port, tls_opts)
  return t.raises(function()
    loom.timeout(5, function()
      local s <close> = net.connect(host, port, { tls = tls_opts })
    end)
  end)
end

-- ---- loom client, loom server ----

test("echo over TLS, with the test CA trusted", function()
  with_server(echo, server_tls(), function(port)
    with_client("localhost", port, CA(), function(s)
      s:write("hello\n", "world\n")
      t.eq(s:read_line(), "hello")
      t.eq(s:read_line(), "world")
      local v = s:tls_version()
      t.ok(v == "TLSv1.2" or v == "TLSv1.3", v)
      local cert = s:peer_certificate()
      t.eq(cert.subject, "CN=localhost")
      t.eq(cert.issuer, "CN=loom test CA")
      t.eq(cert.san, { "localhost", "127.0.0.1" })
      t.ok(cert.not_before < loom.time() and loom.time() < cert.not_after)
      t.ok(cert.fingerprint:match("^%x+$") and #cert.fingerprint == 64, cert.fingerprint)
      t.eq(s:alpn(), nil)
    end)
  end)
end)

test("a 10 MB transfer each way", function()
  with_server(echo, server_tls(), function(port)
    with_client("127.0.0.1", port, CA(), function(s)
      local chunk = ("0123456789abcdef"):rep(4096) -- 64 KiB
      local writer = loom.spawn(function()
        for _ = 1, 160 do s:write(chunk) end
        s:shutdown()
      end)
      local n, bad = 0, false
      while true do
        local d = s:read()
        if not d then break end
        local from = n % 16 -- the pattern repeats every 16 bytes
        if d ~= (chunk .. chunk):sub(from + 1, from + #d) then bad = true end
        n = n + #d
      end
      writer:await()
      t.eq(n, 160 * #chunk)
      t.eq(bad, false, "the bytes came back in order")
    end)
  end)
end)

test("many connections at once", function()
  with_server(echo, server_tls(), function(port)
    local fns = {}
    for i = 1, 20 do
      fns[i] = function()
        return with_client("localhost", port, CA(), function(s)
          s:write(("line %d\n"):format(i))
          return s:read_line()
        end)
      end
    end
    local r = table.pack(loom.gather(table.unpack(fns)))
    for i = 1, 20 do t.eq(r[i], ("line %d"):format(i)) end
  end)
end)

test("ALPN: the first client protocol the server speaks", function()
  local seen = loom.queue()
  local function handler(s) seen:put(s:alpn() or "none") end
  with_server(handler, server_tls(nil, { alpn = { "h2", "http/1.1" } }), function(port)
    local function alpn(list)
      local o = CA()
      o.alpn = list
      return with_client("localhost", port, o, function(s)
        s:read() -- until the server closes: its handler has run
        return s:alpn() or "none", seen:get()
      end)
    end
    t.eq({ alpn { "http/1.1", "h2" } }, { "http/1.1", "http/1.1" })
    t.eq({ alpn { "h2" } }, { "h2", "h2" })
    t.eq({ alpn { "spdy/3", "h2" } }, { "h2", "h2" })
    t.eq({ alpn { "spdy/3" } }, { "none", "none" })
    t.eq({ alpn(nil) }, { "none", "none" })
  end)
end)

test("the server sees the client's certificate (verify_client)", function()
  local seen = loom.queue()
  local opts = server_tls(nil, { ca = path("ca.pem"), verify_client = true })
  with_server(function(s)
    seen:put(s:peer_certificate().subject)
    s:write("welcome\n")
  end, opts, function(port)
    local o = CA()
    o.cert, o.key = path("client.pem"), path("client.key")
    with_client("localhost", port, o, function(s) t.eq(s:read_line(), "welcome") end)
    t.eq(seen:get(), "CN=loom client")
  end)
end)

test("verify_client: no certificate, or one from another CA, is refused", function()
  local ran = false
  local opts = server_tls(nil, { ca = path("ca.pem"), verify_client = true })
  local log = capture_stderr(function()
    with_server(function(s) ran = true; s:write("welcome\n") end, opts, function(port)
      for _, cert in ipairs { false, "rogue" } do
        local o = CA()
        if cert then o.cert, o.key = path(cert .. ".pem"), path(cert .. ".key") end
        -- TLS 1.3 clients finish their handshake before the server checks
        -- theirs: the refusal may come with the first read
        local err = t.raises(function()
          loom.timeout(5, with_client, "localhost", port, o, function(s) return s:read() end)
        end)
        t.eq(err.kind, "tls", tostring(err))
      end
    end)
  end)
  t.eq(ran, false, "the handler never ran")
  t.ok(log:find("TLS handshake failed: tls: handshake: peer did not return a certificate",
    1, true), log)
  t.ok(log:find("certificate verify failed", 1, true), log)
end)

test("a client without a key, or a server without a certificate, is misuse", function()
  t.raises(function() tls.server_context {} end, "'cert' is required")
  t.raises(function()
    tls.server_context { cert = path("server.pem"), verify_client = true }
  end, "needs 'ca'")
  t.raises(function() tls.server_context { cert = path("server.pem"), alpn = "h2" } end,
    "array of strings")
  t.raises(function() net.connect("127.0.0.1", 1, { tls = "yes" }) end, "tls must be")
  t.raises(function()
    net.listen("127.0.0.1", 0, echo, { tls = server_tls(nil, { handshake_timeout = "1" }) })
  end, "handshake_timeout")
end)

test("TLS over a Unix socket, with tls.client on a connected stream", function()
  local sock = os.tmpname()
  os.remove(sock)
  local srv = net.listen_unix(sock, echo, { tls = server_tls() })
  local plain <close> = net.connect_unix(sock)
  local s = tls.client(plain, "localhost", CA())
  t.ok(rawequal(s, plain), "the same stream, now with TLS")
  s:write("over unix\n")
  t.eq(s:read_line(), "over unix")
  t.raises(function() tls.client(s, "localhost", CA()) end, "already has TLS")
  s:close()
  srv:shutdown()
end)

-- ---- verification ----

test("by default the system's store is used: the test CA is not trusted", function()
  with_handshakes(server_tls(), function(port, results)
    local err = connect_error("localhost", port, true)
    t.eq(err.kind, "tls")
    t.eq(err.message, "handshake with localhost: certificate verify failed: "
      .. "unable to get local issuer certificate")
    err = loom.timeout(5, results.get, results) -- our alert reached the server
    t.eq(tostring(err), "tls: handshake: tlsv1 alert unknown ca")
  end)
end)

test("an expired certificate is refused", function()
  capture_stderr(function()
    with_server(echo, server_tls("expired"), function(port)
      local err = connect_error("localhost", port, CA())
      t.eq(err.kind, "tls")
      t.ok(err.message:find("certificate has expired", 1, true), err.message)
    end)
  end)
end)

test("a certificate for another name is refused; server_name picks the name", function()
  capture_stderr(function()
    with_server(echo, server_tls("wrong"), function(port)
      local err = connect_error("localhost", port, CA())
      t.eq(err.kind, "tls")
      t.eq(err.message, "handshake with localhost: certificate verify failed: hostname mismatch")
      err = connect_error("127.0.0.1", port, CA()) -- an IP is checked as an IP
      t.ok(err.message:find("IP address mismatch", 1, true), err.message)
      local o = CA()
      o.server_name = "wrong.example"
      with_client("127.0.0.1", port, o, function(s)
        s:write("x")
        t.eq(s:read(), "x")
        t.eq(s:peer_certificate().subject, "CN=wrong.example")
      end)
    end)
  end)
end)

test("a server's name is checked when connecting by IP address", function()
  with_server(echo, server_tls(), function(port)
    with_client("127.0.0.1", port, CA(), function(s)
      s:write("ip")
      t.eq(s:read(), "ip")
    end)
  end)
end)

test("verify = false accepts any certificate", function()
  for _, name in ipairs { "server", "expired", "wrong" } do
    with_server(echo, server_tls(name), function(port)
      with_client("localhost", port, { verify = false }, function(s)
        s:write("ok")
        t.eq(s:read(), "ok")
      end)
    end)
  end
end)

test("unusable files raise tls errors naming them; nothing is left open", function()
  local err = t.raises(function()
    net.listen("127.0.0.1", 0, echo, { tls = { cert = path("nope.pem") } })
  end, "tls")
  t.ok(err.message:find(path("nope.pem"), 1, true), err.message)
  err = t.raises(function()
    net.listen("127.0.0.1", 0, echo, { tls = { cert = path("server.pem"), key = path("client.key") } })
  end, "tls")
  t.ok(err.message:find("mismatch", 1, true), err.message)
  err = t.raises(function()
    net.listen("127.0.0.1", 0, echo, { tls = { cert = path("ca.key"), key = path("ca.key") } })
  end, "tls")
  t.ok(err.message:find("cannot load certificate", 1, true), err.message)
  capture_stderr(function() -- the server sees clients that give up at once
    with_server(echo, server_tls(), function(port)
      err = connect_error("localhost", port, { ca = path("nope.pem") })
      t.eq(err.kind, "tls")
      t.ok(err.message:find("cannot load CA file " .. path("nope.pem"), 1, true), err.message)
      err = connect_error("localhost", port, { ca = path("ca.pem"), cert = path("nope.pem") })
      t.ok(err.message:find("cannot load certificate", 1, true), err.message)
    end)
  end)
end)

-- ---- ends, bad peers, cancellation ----

test("close_notify ends the stream; the other direction stays open", function()
  local got = loom.queue()
  with_server(function(s)
    s:write("bye")
    s:shutdown() -- close_notify, then FIN
    got:put(s:read_all())
  end, server_tls(), function(port)
    with_client("localhost", port, CA(), function(s)
      t.eq(s:read_all(), "bye")
      t.eq(s:read(), nil)
      s:write("thanks")
      s:shutdown()
      t.eq(got:get(), "thanks")
    end)
  end)
end)

test("a server that closes: the client reads the data, then nil", function()
  with_server(function(s) s:write("last words") end, server_tls(), function(port)
    with_client("localhost", port, CA(), function(s)
      t.eq(s:read_exactly(10), "last words")
      t.eq(s:read(), nil)
      t.eq(s:read_line(), nil)
    end)
  end)
end)

test("a plain-text client to a TLS server: tls error, no hang", function()
  with_handshakes(server_tls(), function(port, results)
    loom.timeout(5, function()
      local c <close> = net.connect("127.0.0.1", port)
      c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
      local err = results:get()
      t.eq(err.kind, "tls", tostring(err))
      t.ok(err.message:find("^handshake: "), err.message)
      c:read_all() -- the server's alert, then the end: no hang
    end)
  end)
  -- and through net.listen: logged, closed
  local log = capture_stderr(function()
    with_server(echo, server_tls(), function(port)
      loom.timeout(5, function()
        local c <close> = net.connect("127.0.0.1", port)
        c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c:read_all()
      end)
    end)
  end)
  t.ok(log:find("loom: TLS handshake failed: tls: handshake: ", 1, true), log)
end)

t.test("a server that answers garbage: tls error, no hang", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    s:read()
  end)
  local err = connect_error("127.0.0.1", srv.port, { verify = false })
  t.eq(err.kind, "tls", tostring(err))
  t.ok(err.message:find("^handshake with 127.0.0.1: "), err.message)
  srv:shutdown()
end)

t.test("a server that closes during the handshake: tls error", function()
  local srv = net.listen("127.0.0.1", 0, function(s) s:read() end) -- gets the hello, closes
  local err = connect_error("127.0.0.1", srv.port, { verify = false })
  t.eq(err.kind, "tls", tostring(err))
  t.eq(err.message, "handshake with 127.0.0.1: connection closed by the peer")
  srv:shutdown()
end)

-- A TCP server that reads a client's hello and never answers;
-- fn(port, hellos): hellos:get() returns once a hello has arrived, so the
-- client is waiting for the handshake.
local function with_silent_server(fn)
  local stop, hellos = loom.event(), loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s)
    hellos:put(s:read())
    stop:wait()
  end)
  local ok, err = pcall(fn, srv.port, hellos)
  stop:set()
  srv:shutdown()
  if not ok then error(err, 0) end
end

t.test("a handshake honours loom.timeout and closes the stream", function()
  with_silent_server(function(port)
    local t0 = loom.now()
    local err = t.raises(function()
      loom.timeout(0.2, net.connect, "127.0.0.1", port, { tls = { verify = false } })
    end)
    t.eq(err.kind, "timeout")
    t.ok(loom.now() - t0 < 2)
    -- the same with tls.client directly: the stream is closed
    local s <close> = net.connect("127.0.0.1", port)
    t.raises(function() loom.timeout(0.1, tls.client, s, "localhost", true) end, "timeout")
    t.raises(function() s:read() end, "closed")
    -- and net.connect's own timeout option covers the handshake
    err = t.raises(function()
      net.connect("127.0.0.1", port, { timeout = 0.1, tls = true })
    end)
    t.eq(err.kind, "timeout")
  end)
end)

t.test("a handshake can be cancelled, or ended by closing the stream", function()
  with_silent_server(function(port, hellos)
    local task = loom.spawn(net.connect, "127.0.0.1", port, { tls = { verify = false } })
    hellos:get()
    task:cancel()
    t.raises(function() task:await() end, "cancelled")
    t.eq(task:status(), "cancelled")
    local s <close> = net.connect("127.0.0.1", port)
    local hs = loom.spawn(tls.client, s, "localhost", { verify = false })
    hellos:get()
    s:close()
    t.raises(function() hs:await() end, "closed")
  end)
end)

test("a server drops a client that never finishes its handshake", function()
  with_server(echo, server_tls(nil, { handshake_timeout = 0.1 }), function(port)
    local log = capture_stderr(function()
      loom.timeout(5, function()
        local c <close> = net.connect("127.0.0.1", port)
        t.eq(c:read(), nil) -- closed by the server
      end)
    end)
    t.ok(log:find("timeout", 1, true), log)
  end)
end)

t.test("TLS methods on a plain stream answer nil", function()
  local srv = net.listen("127.0.0.1", 0, function() end)
  local c <close> = net.connect("127.0.0.1", srv.port)
  t.eq({ c:alpn(), c:tls_version(), c:peer_certificate() }, {})
  srv:shutdown()
  t.raises(function() tls.client(c, "x", { verify = "no" }) end, "boolean expected")
end)

-- ---- real peers ----

-- Start `openssl s_server` on a free port; returns the pipe and the port.
local function s_server(args)
  local p = io.popen(("cd %s && exec openssl s_server -accept 127.0.0.1:0 -naccept 1 %s"
    .. " 2>/dev/null"):format(DIR, args))
  for line in p:lines() do
    local port = line:match("^ACCEPT 127%.0%.0%.1:(%d+)")
    if port then return p, tonumber(port) end
  end
  p:close()
  error("openssl s_server did not start")
end

test("loom client, openssl s_server", function()
  local p, port = s_server("-cert server.pem -key server.key -www -alpn h2,http/1.1")
  local reply = loom.timeout(5, with_client, "localhost", port,
    { ca = path("ca.pem"), alpn = { "http/1.1" } }, function(s)
      t.eq(s:alpn(), "http/1.1")
      s:write("GET / HTTP/1.0\r\n\r\n")
      return s:read_all()
    end)
  p:read("a")
  p:close()
  t.ok(reply:find("^HTTP/1.0 200 ok"), reply)
end)

test("TLS 1.2 is accepted, older versions are not", function()
  local p, port = s_server("-cert server.pem -key server.key -www -tls1_2")
  loom.timeout(5, with_client, "localhost", port, CA(), function(s)
    t.eq(s:tls_version(), "TLSv1.2")
    s:write("GET / HTTP/1.0\r\n\r\n")
    t.ok(s:read_all():find("^HTTP/1.0 200 ok"))
  end)
  p:read("a")
  p:close()
  p, port = s_server("-cert server.pem -key server.key -www -tls1_1 -cipher DEFAULT@SECLEVEL=0")
  local err = connect_error("localhost", port, CA())
  p:read("a")
  p:close()
  t.eq(err.kind, "tls", tostring(err))
end)

-- Start cmd in the background (io.popen does not wait); fn() runs the loom
-- side, then the output of cmd and its exit status are returned.
local function run_peer(cmd, fn)
  local p = io.popen(cmd .. " 2>&1")
  local ok, err = pcall(fn)
  local out = p:read("a")
  local _, _, status = p:close()
  if not ok then error(err, 0) end
  return out, status
end

local function http_handler(served)
  return function(s)
    local head = s:read_until("\r\n\r\n")
    s:write("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
    served:put({ head = head, alpn = s:alpn(), version = s:tls_version() })
  end
end

test("openssl s_client, loom server", function()
  local served = loom.queue()
  with_server(http_handler(served), server_tls(nil, { alpn = { "http/1.1" } }), function(port)
    local out, status = run_peer(("printf 'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n'"
      .. " | openssl s_client -connect 127.0.0.1:%d -servername localhost -CAfile %s"
      .. " -verify_return_error -alpn http/1.1 -quiet"):format(port, path("ca.pem")),
      function()
        local r = loom.timeout(5, served.get, served)
        t.ok(r.head:find("^GET / HTTP/1.1"), r.head)
        t.eq(r.alpn, "http/1.1")
      end)
    t.eq(status, 0, out)
    t.ok(out:find("hello\n", 1, true), out)
  end)
end)

test("curl, loom server", function()
  local served = loom.queue()
  with_server(http_handler(served), server_tls(nil, { alpn = { "http/1.1" } }), function(port)
    local out, status = run_peer(("curl -sS --cacert %s https://localhost:%d/")
      :format(path("ca.pem"), port), function()
        local r = loom.timeout(5, served.get, served)
        t.ok(r.head:find("^GET / HTTP/1.1\r\n"), r.head)
        t.eq(r.alpn, "http/1.1")
      end)
    t.eq(status, 0, out)
    t.eq(out, "hello\n")
  end)
end, { skip = not HAVE_CURL and "the curl command is missing" or nil })

test("curl refuses the loom server's certificate without the CA", function()
  with_handshakes(server_tls(), function(port, results)
    local out, status = run_peer(("curl -sS https://localhost:%d/"):format(port), function()
      local err = loom.timeout(5, results.get, results)
      t.eq(err.kind, "tls", tostring(err))
      t.ok(err.message:find("alert unknown ca", 1, true), err.message)
    end)
    t.ok(status ~= 0, out)
    t.ok(out:find("certificate", 1, true), out)
  end)
end, { skip = not HAVE_CURL and "the curl command is missing" or nil })

test("an idle TLS keep-alive connection is not parked and goes on (issue 13)", function()
  local http = require "loom.http"
  local srv <close> = http.listen("127.0.0.1", 0, function(req) return 200, "hi " .. req.path end,
    { tls = server_tls(), _park_after = 0.05 })
  local s <close> = net.connect("127.0.0.1", srv.port, { tls = { verify = false } })
  local function get(path)
    s:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
    local head = s:read_until("\r\n\r\n")
    local n = tonumber(head:match("[Cc]ontent%-[Ll]ength: (%d+)"))
    return head:match("^HTTP/1%.1 (%d+)"), s:read_exactly(n)
  end
  t.eq({ get("/a") }, { "200", "hi /a" })
  loom.sleep(0.3) -- past _park_after: a TLS stream keeps its task
  t.eq(srv.parked:count(), 0)
  t.eq({ get("/b") }, { "200", "hi /b" })
  srv:shutdown()
end)

-- ---- end ----

-- (LOOM_KEEP_CERTS=1 keeps them, to reproduce a failure by hand)
t.test("remove the test certificates", function()
  if DIR and not os.getenv("LOOM_KEEP_CERTS") then t.ok(sh("rm -rf " .. DIR)) end
end)
