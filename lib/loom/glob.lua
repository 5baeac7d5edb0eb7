-- loom.glob: fs.glob(pattern), installed on the fs module by its C opener
-- (host/fs.c). A walk over fs.readdir with the types scandir reports, one
-- directory per wait: `**` matches any number of directories (symlinked
-- ones are not followed, so a link loop cannot trap it), `*`, `?` and
-- `[...]` match within one name, and names starting with "." match only a
-- pattern segment that starts with "." itself, as in a shell.
local fs = ...
if type(fs) ~= "table" then fs = require "loom.fs" end

local MAGIC = "[%*%?%[\\]"

-- A glob segment -> an anchored Lua pattern. `*` any run of bytes, `?` one
-- UTF-8 character, `[abc]`, `[a-z]`, `[!a]`/`[^a]` classes, `\x` x itself.
local function compile(seg)
  local out, i, n = { "^" }, 1, #seg
  while i <= n do
    local c = seg:sub(i, i)
    if c == "*" then
      out[#out + 1] = ".*"
    elseif c == "?" then
      out[#out + 1] = utf8.charpattern
    elseif c == "\\" and i < n then
      i = i + 1
      out[#out + 1] = "%" .. seg:sub(i, i)
    elseif c == "[" then
      local j, neg = i + 1, false
      if seg:sub(j, j) == "!" or seg:sub(j, j) == "^" then neg, j = true, j + 1 end
      local close = seg:find("]", j + 1, true) -- a "]" first is a member
      if not close then
        out[#out + 1] = "%["
      else
        local body = seg:sub(j, close - 1):gsub("[%%%]%[%^]", "%%%0")
        out[#out + 1] = "[" .. (neg and "^" or "") .. body .. "]"
        i = close
      end
    else
      out[#out + 1] = c:find("^[%w/]") and c or "%" .. c
    end
    i = i + 1
  end
  out[#out + 1] = "$"
  return table.concat(out)
end

-- The literal text of a segment without magic ("\x" -> "x").
local function literal(seg) return (seg:gsub("\\(.)", "%1")) end

local function join(dir, name)
  if dir == "" then return name end
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

-- Entries of dir as names, types; nothing when it cannot be read (a shell
-- skips what it cannot list too).
local function list(dir)
  local ok, names, types = pcall(fs.readdir, dir == "" and "." or dir, { types = true })
  if not ok then
    if type(names) == "table" and names.kind ~= "io" then error(names, 0) end
    return {}, {}
  end
  return names, types
end

local function is_dir(path, typ, follow)
  if typ == "directory" then return true end
  if typ == "link" and not follow then return false end
  if typ ~= "link" and typ ~= "unknown" then return false end
  local ok, st = pcall(follow and fs.stat or fs.lstat, path)
  if not ok and type(st) == "table" and st.kind ~= "io" then error(st, 0) end
  return ok and st.type == "directory"
end

local function exists(path)
  local ok, err = pcall(fs.lstat, path)
  if not ok and type(err) == "table" and err.kind ~= "io" then error(err, 0) end
  return ok
end

-- Match segs[i..] below dir (a path as the result will show it). want_dir:
-- the pattern ended with "/", so only directories match.
local function walk(dir, segs, i, out, want_dir)
  local seg = segs[i]
  if seg == nil then -- the pattern was "/"

    if not want_dir or is_dir(dir, "unknown", true) then out[dir] = true end
    return
  end
  local last = i == #segs
  if seg.any then
    if not last then walk(dir, segs, i + 1, out, want_dir) end -- no directory
    local names, types = list(dir)
    for k, name in ipairs(names) do
      if name:sub(1, 1) ~= "." then
        local path = join(dir, name)
        local sub = is_dir(path, types[k], false)
        if last and (sub or not want_dir) then out[path] = true end
        if sub then walk(path, segs, i, out, want_dir) end
      end
    end
  elseif seg.lit then
    local path = join(dir, seg.lit)
    if last then
      if exists(path) and (not want_dir or is_dir(path, "unknown", true)) then
        out[path] = true
      end
    else
      walk(path, segs, i + 1, out, want_dir)
    end
  else
    local pat, dot = seg.pat, seg.dot
    local names, types = list(dir)
    for k, name in ipairs(names) do
      if (dot or name:sub(1, 1) ~= ".") and name:find(pat) then
        local path = join(dir, name)
        if last then
          if not want_dir or is_dir(path, types[k], true) then out[path] = true end
        elseif is_dir(path, types[k], true) then
          walk(path, segs, i + 1, out, want_dir)
        end
      end
    end
  end
end

-- fs.glob(pattern) -> sorted array of the paths that match
function fs.glob(pattern)
  if type(pattern) ~= "string" then
    error(("bad argument #1 to 'glob' (string expected, got %s)"):format(type(pattern)), 2)
  end
  if pattern:find("\0", 1, true) then
    error("bad argument #1 to 'glob' (pattern contains a zero byte)", 2)
  end
  if pattern == "" then return {} end
  local root = pattern:sub(1, 1) == "/" and "/" or ""
  local want_dir = pattern:sub(-1) == "/" and #pattern > 1
  local segs = {}
  for seg in pattern:gmatch("[^/]+") do
    if seg == "**" then
      if not (segs[#segs] or {}).any then segs[#segs + 1] = { any = true } end
    elseif seg:find(MAGIC) then
      segs[#segs + 1] = { pat = compile(seg), dot = seg:sub(1, 1) == "." }
    else
      segs[#segs + 1] = { lit = literal(seg) }
    end
  end
  local found, out = {}, {}
  walk(root, segs, 1, found, want_dir)
  for path in pairs(found) do
    out[#out + 1] = want_dir and path .. "/" or path
  end
  table.sort(out)
  return out
end

return fs.glob
