-- crud_api.lua: a JSON API for books and movies on SQLite.
--   loom examples/crud_api.lua [port] [database]   (defaults: 8080, crud.db;
--                                                   ":memory:" for a scratch one)
-- Routes, for each kind in {books, movies}:
--   GET /books          list           POST /books      add   {"title": ..., "year": ...}
--   GET /books/:id      one, or 404    DELETE /books/:id remove
-- Try it with examples/crud_client.lua, or curl.
local http = require "loom.http"
local sqlite = require "loom.sqlite"

local db = sqlite.open(arg[2] or "crud.db")
db:exec([[
  CREATE TABLE IF NOT EXISTS books  (id INTEGER PRIMARY KEY, title TEXT NOT NULL, year INTEGER);
  CREATE TABLE IF NOT EXISTS movies (id INTEGER PRIMARY KEY, title TEXT NOT NULL, year INTEGER);
]])

local r = http.router()
for _, kind in ipairs { "books", "movies" } do
  r:get("/" .. kind, function()
    return 200, db:query("SELECT id, title, year FROM " .. kind .. " ORDER BY id")
  end)
  r:get("/" .. kind .. "/:id", function(req)
    local row = db:first("SELECT id, title, year FROM " .. kind .. " WHERE id = ?",
      tonumber(req.params.id))
    if not row then return 404, { error = "not found" } end
    return 200, row
  end)
  r:post("/" .. kind, function(req)
    local ok, item = pcall(req.json, req)
    if not ok or type(item) ~= "table" or type(item.title) ~= "string" then
      return 400, { error = "expected a JSON object with a title" }
    end
    local _, id = db:execute("INSERT INTO " .. kind .. " (title, year) VALUES (:title, :year)",
      { title = item.title, year = math.tointeger(item.year) })
    return 201, { id = id, title = item.title, year = item.year }, { location = "/" .. kind .. "/" .. id }
  end)
  r:delete("/" .. kind .. "/:id", function(req)
    local changes = db:execute("DELETE FROM " .. kind .. " WHERE id = ?", tonumber(req.params.id))
    if changes == 0 then return 404, { error = "not found" } end
    return 204
  end)
end

local srv = http.listen("127.0.0.1", tonumber(arg[1]) or 8080, r)
print("listening on " .. srv.port)
io.stdout:flush()
srv:wait()
