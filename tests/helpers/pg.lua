-- A throwaway PostgreSQL server for the tests: initdb into a temporary
-- directory, then postgres on a Unix socket there and on 127.0.0.1 at a
-- free port, with fsync off and small buffers so that it starts fast.
-- As root (CI), initdb and postgres refuse to run, so they run as nobody
-- (setpriv execs the server itself: signals reach it directly).
--
--   local server, why = require("helpers.pg").start({tls = true})
--   if not server then t.skip(why) end
--   server.url, server.tcp_url, server:restart(), server:stop()
local loom = require "loom"
local net = require "loom.net"
local pg = require "loom.pg"
local process = require "loom.process"

local H = {}

local function sh(cmd)
  local r = process.run(cmd, { timeout = 60 })
  if not r.ok then error(("%s: %s%s"):format(cmd, r.stdout, r.stderr), 2) end
  return r.stdout
end

local function bindir()
  local r = process.run("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1")
  local dir = r.stdout:gsub("%s+$", "")
  if dir == "" then return nil end
  local f = io.open(dir .. "/initdb")
  if not f then return nil end
  f:close()
  return dir
end

local function free_port()
  local srv = net.listen("127.0.0.1", 0, function() end)
  local port = srv.port
  srv:close()
  return port
end

local Server = {}
Server.__index = Server

local function as_user(self, argv)
  if self.root then
    local a = { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--" }
    for _, v in ipairs(argv) do a[#a + 1] = v end
    return a
  end
  return argv
end

-- Start postgres on the data directory and wait until it answers.
function Server:run()
  local argv = as_user(self, { self.bin .. "/postgres", "-D", self.data, "-k", self.dir,
    "-p", tostring(self.port), "-h", "127.0.0.1", "-c", "fsync=off",
    "-c", "shared_buffers=16MB", "-c", "max_connections=60",
    "-c", "synchronous_commit=off", "-c", "full_page_writes=off" })
  if self.tls then
    argv[#argv + 1] = "-c"; argv[#argv + 1] = "ssl=on"
  end
  self.proc = process.spawn(argv, { stdin = "null", stdout = "null", stderr = "null" })
  local deadline = loom.now() + 20
  while true do
    local ok, c = pcall(pg.connect, self.url)
    if ok then c:close(); return end
    if loom.now() > deadline then error("postgres did not start: " .. tostring(c)) end
    loom.sleep(0.05) -- polling for readiness of an external server
  end
end

-- Stop the server (fast shutdown) and wait for it.
function Server:halt()
  if self.proc then
    self.proc:kill("SIGINT")
    self.proc:wait()
    self.proc = nil
  end
end

function Server:restart()
  self:halt()
  self:run()
end

function Server:stop()
  self:halt()
  sh("rm -rf " .. self.dir)
end

-- start({tls = bool}) -> Server, or nil and why (no server binaries)
function H.start(opts)
  opts = opts or {}
  local bin = bindir()
  if not bin then
    return nil, "PostgreSQL server not installed (apt install postgresql; scripts/test does)"
  end
  local self = setmetatable({ bin = bin, tls = opts.tls }, Server)
  self.root = sh("id -u"):match("^0") ~= nil
  self.dir = sh("mktemp -d /tmp/loom-pg-XXXXXX"):gsub("%s+$", "")
  self.data = self.dir .. "/data"
  if self.root then sh("chown nobody " .. self.dir) end
  local initdb = as_user(self, { bin .. "/initdb", "-D", self.data, "-A", "trust",
    "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C" })
  local r = process.run(initdb, { timeout = 60 })
  if not r.ok then error("initdb failed: " .. r.stdout .. r.stderr) end
  if self.tls then
    local key, crt = self.data .. "/server.key", self.data .. "/server.crt"
    sh(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
      "-keyout %s -out %s -subj /CN=localhost -days 2 2>/dev/null && chmod 600 %s"):format(
      key, crt, key))
    if self.root then sh("chown nobody " .. key .. " " .. crt) end
  end
  self.port = free_port()
  self.url = ("postgresql://postgres@/postgres?host=%s&port=%d"):format(self.dir, self.port)
  self.tcp_url = ("postgresql://postgres@127.0.0.1:%d/postgres"):format(self.port)
  self:run()
  return self
end

return H
