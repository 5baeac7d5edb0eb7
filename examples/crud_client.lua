-- crud_client.lua: exercise crud_api.lua concurrently: add 20 books and 20
-- movies at once, read them back, delete every other one, check the rest.
--   loom examples/crud_client.lua [port]
local loom = require "loom"
local http = require "loom.http"

local base = ("http://127.0.0.1:%d"):format(tonumber(arg[1]) or 8080)

local function add_all(kind, n)
  local ids = {}
  loom.group(function(g)
    for i = 1, n do
      g:spawn(function()
        local res = http.post(base .. "/" .. kind, { title = kind .. " " .. i, year = 1990 + i })
        assert(res.status == 201, res.status)
        ids[i] = res:json().id
      end)
    end
  end)
  return ids
end

local books, movies
loom.gather(function() books = add_all("books", 20) end,
            function() movies = add_all("movies", 20) end)

loom.group(function(g)
  for i = 1, 20, 2 do
    g:spawn(function() assert(http.delete(base .. "/books/" .. books[i]).status == 204) end)
    g:spawn(function() assert(http.delete(base .. "/movies/" .. movies[i]).status == 204) end)
  end
end)

local left_books = http.get(base .. "/books"):json()
local left_movies = http.get(base .. "/movies"):json()
local one = http.get(base .. "/books/" .. books[2]):json()
local gone = http.get(base .. "/books/" .. books[1]).status
print(("books left: %d, movies left: %d, book %d is %q (%d), deleted book gives %d"):format(
  #left_books, #left_movies, books[2], one.title, one.year, gone))
http.close_idle()
