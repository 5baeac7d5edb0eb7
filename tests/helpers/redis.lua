-- A throwaway Redis server for the tests: redis-server on a Unix socket in
-- a temporary directory and on 127.0.0.1 at a free port, no persistence.
--   local server, why = require("helpers.redis").start()
--   if not server then t.skip(why) end
--   server.url, server.unix_url, server:stop()
local loom = require "loom"
local net = require "loom.net"
local process = require "loom.process"

local H = {}
local Server = {}
Server.__index = Server

local function free_port()
  local srv = net.listen("127.0.0.1", 0, function() end)
  local port = srv.port
  srv:close()
  return port
end

function Server:stop()
  if self.proc then
    self.proc:kill("SIGTERM")
    self.proc:wait()
    self.proc = nil
  end
  process.run({ "rm", "-rf", self.dir })
end

-- start({tls = true}) -> Server, or nil and why (no redis-server). With tls,
-- server.tls_port serves TLS with a self-signed certificate for localhost
-- (server.ca: its path).
function H.start(opts)
  opts = opts or {}
  local f = io.open("/usr/bin/redis-server")
  if not f then return nil, "redis-server not installed (apt install redis-server; scripts/test does)" end
  f:close()
  local self = setmetatable({}, Server)
  self.dir = process.run("mktemp -d /tmp/loom-redis-XXXXXX").stdout:gsub("%s+$", "")
  self.sock = self.dir .. "/redis.sock"
  self.port = free_port()
  local argv = { "/usr/bin/redis-server", "--port", tostring(self.port),
    "--bind", "127.0.0.1", "--unixsocket", self.sock, "--save", "", "--appendonly", "no",
    "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning" }
  if opts.tls then
    local key, crt = self.dir .. "/server.key", self.dir .. "/server.crt"
    local r = process.run(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
      "-nodes -keyout %s -out %s -subj /CN=localhost -addext subjectAltName=DNS:localhost " ..
      "-days 2"):format(key, crt))
    if not r.ok then error("openssl: " .. r.stderr) end
    self.ca = crt
    self.tls_port = free_port()
    for _, a in ipairs { "--tls-port", tostring(self.tls_port), "--tls-cert-file", crt,
      "--tls-key-file", key, "--tls-ca-cert-file", crt, "--tls-auth-clients", "no" } do
      argv[#argv + 1] = a
    end
  end
  self.proc = process.spawn(argv, { stdin = "null", stdout = "null", stderr = "null" })
  self.url = ("redis://127.0.0.1:%d"):format(self.port)
  self.unix_url = "unix://" .. self.sock
  local deadline = loom.now() + 10
  while true do -- polling for readiness of an external server
    local ok, s = pcall(net.connect, "127.0.0.1", self.port)
    if ok then s:close(); break end
    if loom.now() > deadline then error("redis-server did not start") end
    loom.sleep(0.02)
  end
  return self
end

return H
