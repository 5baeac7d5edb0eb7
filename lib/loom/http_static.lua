-- http.static(dir [, opts]): a handler serving the files under dir. Never a
-- path outside dir: ".." segments are refused, and the real path (symlinks
-- resolved) of the very file served, an index file included, must be the
-- real root or under it.
local loom = require "loom"
local fs = require "loom.fs"

local TYPES = {
  html = "text/html; charset=utf-8", htm = "text/html; charset=utf-8",
  css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
  mjs = "text/javascript; charset=utf-8", json = "application/json",
  txt = "text/plain; charset=utf-8", md = "text/markdown; charset=utf-8",
  csv = "text/csv; charset=utf-8", xml = "application/xml", svg = "image/svg+xml",
  png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", gif = "image/gif",
  webp = "image/webp", ico = "image/x-icon", wasm = "application/wasm",
  pdf = "application/pdf", zip = "application/zip", gz = "application/gzip",
  woff = "font/woff", woff2 = "font/woff2", mp4 = "video/mp4", mp3 = "audio/mpeg",
  wav = "audio/wav", webm = "video/webm",
}
-- Larger files (and ranges) are streamed, with their Content-Length: a
-- whole file read into a string and queued would cost a client that stops
-- reading twice the file's size (the string and the write queue's copy).
local BIG = 64 * 1024
-- A streamed file is read in chunks, each sent before the next is read: a
-- client that stops reading holds one chunk's copy in the write queue. So a
-- chunk is small (CHUNK) unless the client has taken TRUST bytes and each
-- chunk as soon as it came (within QUICK seconds): then it doubles, up to
-- CHUNK_MAX (fewer reads and writes: a fast client is served 2-3x faster).
-- TRUST is more than the kernel's socket buffers take from the server at
-- once (1.7 MB per slowhttptest -X client on Linux; tcp_wmem's maximum is
-- 4 MiB): a client that never reads stays at CHUNK.
local CHUNK, CHUNK_MAX = 16384, 65536
local TRUST, QUICK = 8 * 1024 * 1024, 0.001

local function http_date(t) return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t)) end

local function content_type(path)
  local ext = path:match("%.([%w]+)$")
  return ext and TYPES[ext:lower()] or "application/octet-stream"
end

-- "bytes=a-b", "bytes=a-", "bytes=-n" -> first, last (0-based, inclusive);
-- nil for anything else (then the whole file is sent); false: unsatisfiable
local function parse_range(h, size)
  local a, b = h:match("^bytes=(%d*)-(%d*)$")
  if not a or (a == "" and b == "") then return nil end
  local first, last
  if a == "" then
    local n = tonumber(b)
    if n == 0 then return false end
    first, last = math.max(size - n, 0), size - 1
  else
    first = tonumber(a)
    last = b == "" and size - 1 or math.min(tonumber(b), size - 1)
  end
  if first >= size or first > last then return false end
  return first, last
end

-- A file must be what stat said: one that shrank since is not sent short.
local function changed(path)
  return loom.error("io", "file changed while being sent: " .. path)
end

-- The body of a streamed response: [first, last] of the file in chunks.
-- The file is opened on the first call (a HEAD request or a client gone
-- before the body opens nothing) and closed at the end of the body, and by
-- __close, which the server calls when the response ends in any way (the
-- client went away, a write or a read failed, the task was cancelled).
local Streamer = {}
Streamer.__index = Streamer

function Streamer:__call()
  if self.left <= 0 then
    self:__close()
    return nil
  end
  local f = self.f
  if not f then
    f = fs.open(self.path, "rb")
    self.f = f -- before the seek, so that __close has it if the seek fails
    f:seek("set", self.first)
  end
  local size = CHUNK
  if self.sent >= TRUST and loom.now() - self.at < QUICK then
    size = math.min(self.size * 2, CHUNK_MAX)
  end
  self.size = size
  local data = f:read(math.min(self.left, size))
  if not data then error(changed(self.path), 0) end
  self.left, self.sent = self.left - #data, self.sent + #data
  self.at = loom.now() -- the next call comes once the client took this one
  return data
end

function Streamer:__close()
  local f = self.f
  if f then
    self.f, self.left = nil, 0
    f:close()
  end
end

local function streamer(path, first, last)
  return setmetatable({ path = path, first = first, left = last - first + 1,
    sent = 0, size = CHUNK, at = 0 }, Streamer)
end

-- [first, last] of the file, read at once: only those bytes are read.
local function read_part(path, first, last)
  local f <close> = fs.open(path, "rb")
  if first > 0 then f:seek("set", first) end
  local n = last - first + 1
  local data = f:read(n)
  if not data or #data < n then error(changed(path), 0) end
  return data
end

local function serve_file(req, path, st)
  local etag = ('"%x-%x"'):format(st.size, math.floor(st.mtime * 1000))
  local headers = {
    ["content-type"] = content_type(path), ["etag"] = etag,
    ["last-modified"] = http_date(st.mtime), ["accept-ranges"] = "bytes",
  }
  local inm, ims = req.headers["if-none-match"], req.headers["if-modified-since"]
  if (inm and (inm == etag or inm == "*" or inm:find(etag, 1, true)))
    or (not inm and ims and ims == headers["last-modified"]) then
    return 304, nil, headers
  end
  local status, first, last = 200, 0, st.size - 1
  local range = req.headers["range"]
  if range and (not req.headers["if-range"] or req.headers["if-range"] == etag) then
    local a, b = parse_range(range, st.size)
    if a == false then
      headers["content-range"] = ("bytes */%d"):format(st.size)
      return 416, "range not satisfiable\n", headers
    elseif a then
      status, first, last = 206, a, b
      headers["content-range"] = ("bytes %d-%d/%d"):format(a, b, st.size)
    end
  end
  if last < first then return status, "", headers end
  if last - first + 1 > BIG then
    headers["content-length"] = last - first + 1 -- the server sends exactly that many
    return status, streamer(path, first, last), headers
  end
  return status, read_part(path, first, last), headers
end

-- Call fs.fn(path): its result, or nil for an io error (no such file, a
-- symlink loop, a name too long...). Anything else (cancelled) is raised.
local function try(fn, path)
  local ok, r = pcall(fn, path)
  if ok then return r end
  if type(r) == "table" and r.kind == "io" then return nil end
  error(r, 0)
end

local function stat(path) return try(fs.stat, path) end

-- The real path of path when it is the real root or under it, else nil.
local function inside(root, path)
  local real = try(fs.realpath, path)
  if not real then return nil end
  if real == root or real:sub(1, #root + 1) == root .. "/"
    or (root == "/" and real:sub(1, 1) == "/") then
    return real
  end
  return nil
end

return function(http)
  -- http.static(dir [, {prefix=, index=}]) -> handler
  function http.static(dir, opts)
    opts = opts or {}
    local prefix = opts.prefix or ""
    local index = opts.index or "index.html"
    local root -- resolved on first use (the directory may not exist yet)
    return function(req)
      if req.method ~= "GET" and req.method ~= "HEAD" then
        return 405, "method not allowed\n", { allow = "GET, HEAD" }
      end
      root = root or fs.realpath(dir)
      local path = req.path
      if prefix ~= "" then
        if path:sub(1, #prefix) ~= prefix then return 404, "not found\n" end
        path = path:sub(#prefix + 1)
        -- "/static" covers "/static/a", not "/staticfoo"
        if path ~= "" and prefix:sub(-1) ~= "/" and path:sub(1, 1) ~= "/" then
          return 404, "not found\n"
        end
      end
      local parts = {}
      for seg in path:gmatch("[^/]+") do
        if seg == ".." or seg:find("\0", 1, true) or seg:find("\\", 1, true) then
          return 404, "not found\n"
        end
        if seg ~= "." then parts[#parts + 1] = seg end
      end
      local real = inside(root, root .. "/" .. table.concat(parts, "/"))
      local st = real and stat(real)
      if st and st.type == "directory" then -- its index, checked the same way
        real = inside(root, real .. "/" .. index)
        st = real and stat(real)
      end
      if not st or st.type ~= "file" then return 404, "not found\n" end
      return serve_file(req, real, st)
    end
  end
end
