-- http.static(dir [, opts]): a handler serving the files under dir. Never a
-- path outside dir: ".." segments are refused, and the real path (symlinks
-- resolved) must stay under the real root.
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
local BIG = 8 * 1024 * 1024 -- larger files (and ranges) are streamed

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

-- A body function streaming [first, last] of the file.
local function streamer(path, first, last)
  local f, left = nil, last - first + 1
  return function()
    if left <= 0 then
      if f then f:close(); f = nil end
      return nil
    end
    if not f then
      f = fs.open(path, "rb")
      f:seek("set", first)
    end
    local data = f:read(math.min(left, 65536))
    if not data then left = 0; return "" end
    left = left - #data
    return data
  end
end

local function read_part(path, first, last)
  if first == 0 then
    local data = fs.read_file(path)
    return data:sub(1, last + 1)
  end
  local f <close> = fs.open(path, "rb")
  f:seek("set", first)
  return f:read(last - first + 1) or ""
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
  if last - first + 1 > BIG then return status, streamer(path, first, last), headers end
  return status, read_part(path, first, last), headers
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
      end
      local parts = {}
      for seg in path:gmatch("[^/]+") do
        if seg == ".." or seg:find("\0", 1, true) or seg:find("\\", 1, true) then
          return 404, "not found\n"
        end
        if seg ~= "." then parts[#parts + 1] = seg end
      end
      local full = root .. "/" .. table.concat(parts, "/")
      local ok, real = pcall(fs.realpath, full)
      if not ok or (real ~= root and real:sub(1, #root + 1) ~= root .. "/") then
        return 404, "not found\n"
      end
      local st = fs.stat(real)
      if st.type == "directory" then
        real = real .. "/" .. index
        local ok2, st2 = pcall(fs.stat, real)
        if not ok2 or st2.type ~= "file" then return 404, "not found\n" end
        st = st2
      elseif st.type ~= "file" then
        return 404, "not found\n"
      end
      return serve_file(req, real, st)
    end
  end
end
