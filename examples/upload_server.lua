-- upload_server.lua: a small web app with the web essentials: an upload
-- form (multipart, files streamed to disk with limits), a session cookie,
-- middleware (a request id, the login check), gzip, Server-Sent Events
-- telling every open page about new uploads, and an access log.
--   loom examples/upload_server.lua [port] [dir]   (defaults: 8000, a new temp dir)
local loom = require "loom"
local http = require "loom.http"
local fs = require "loom.fs"

local dir = arg[2] or fs.mkdtemp()
local uploads = {} -- {name=, size=, by=}
local watchers = {} -- a queue per open event stream
local sessions = {} -- session id -> user name

local function escape(s)
  return (tostring(s):gsub("[&<>\"']", function(c) return ("&#%d;"):format(c:byte()) end))
end

local function page(user)
  local rows = {}
  for i, u in ipairs(uploads) do
    rows[i] = ("<li>%s (%d bytes, by %s)</li>"):format(escape(u.name), u.size, escape(u.by))
  end
  return ([[<!doctype html><title>uploads</title>
<p>hello %s</p>
<form method="post" action="/upload" enctype="multipart/form-data">
<input type="file" name="file" multiple> <input name="note"> <button>upload</button></form>
<ul id="list">%s</ul>
<script>new EventSource("/events").addEventListener("upload", e =>
  document.getElementById("list").insertAdjacentHTML("beforeend", "<li>" + e.data + "</li>"))
</script>]]):format(escape(user), table.concat(rows))
end

local r = http.router()
local next_id = 0
r:use(function(req, next) -- a request id on every answer
  next_id = next_id + 1
  local status, body, headers = next(req)
  headers = headers or {}
  headers["x-request-id"] = tostring(next_id)
  return status, body, headers
end)
r:use(function(req, next) -- the session cookie, or the login form
  req.user = sessions[req.cookies.session or ""]
  if req.user or req.path == "/login" then return next(req) end
  return 401, '<form method="post" action="/login"><input name="name"><button>log in</button></form>',
    { ["content-type"] = "text/html; charset=utf-8" }
end)

r:post("/login", function(req)
  local name = req:form().name
  if type(name) ~= "string" or name == "" then return 400, "a name, please\n" end
  local sid = ("%08x%08x"):format(math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  sessions[sid] = name
  return 303, "", { location = "/", ["set-cookie"] = http.cookie("session", sid,
    { path = "/", http_only = true, same_site = "Lax" }) }
end)

r:get("/", function(req)
  return 200, page(req.user), { ["content-type"] = "text/html; charset=utf-8" }
end)

r:post("/upload", function(req)
  local form = req:form { max_files = 5, max_file_bytes = 4 * 1024 * 1024 }
  local files = form.file
  if type(files) == "table" and files.path then files = { files } end
  local stored = {}
  for _, f in ipairs(files or {}) do
    local name = #uploads + 1 .. "-" .. f.filename:gsub("[^%w._-]", "_") -- never the client's path
    fs.rename(f.path, dir .. "/" .. name) -- keep it: req:form()'s files go with the handler
    uploads[#uploads + 1] = { name = name, size = f.size, by = req.user }
    stored[#stored + 1] = name
    for q in pairs(watchers) do q:try_put(("%s (%d bytes, by %s)"):format(escape(name), f.size, escape(req.user))) end
  end
  return 200, { stored = stored, note = form.note }
end)

r:get("/events", function(req)
  return 200, http.sse(function(send)
    local q = loom.queue(100)
    watchers[q] = true
    local ok, e = pcall(function()
      while true do send({ event = "upload", data = q:get() }) end
    end)
    watchers[q] = nil
    if not ok then error(e, 0) end
  end, { heartbeat = 15 })
end)

local srv = http.listen("127.0.0.1", tonumber(arg[1]) or 8000, r, { access_log = "combined" })
print("listening on " .. srv.port .. ", storing in " .. dir)
io.stdout:flush()
srv:wait()
