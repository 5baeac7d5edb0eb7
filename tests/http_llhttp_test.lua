-- The request cases derived from llhttp's strict request tests
-- (../shared/testdata/llhttp-requests, see its README), each sent as raw
-- bytes to a real loom.http server: an `accept` case must be served (as many
-- 2xx responses as llhttp parsed requests), a `reject` case refused (after
-- the requests llhttp completed first: a 4xx/5xx or a close, nothing more),
-- and the handler must never see a request past the point of error.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local raw = require "helpers.rawhttp"

local CASES = "../shared/testdata/llhttp-requests/cases.json"

-- Cases we refuse although llhttp accepts them, each with the reason. They
-- are checked like reject cases with no request served, and the list is
-- checked against the data so it cannot go stale.
local DEVIATIONS = {
  -- llhttp does not decode transfer codings; we do (gzip, deflate under
  -- chunked), and "World" is not deflate data: a malformed body is 400.
  ["transfer-encoding.md#POST with `chunked` as last transfer-encoding"] =
    "the body is declared deflate-coded but is not deflate data: 400",
  ["transfer-encoding.md#POST with `chunked` as last transfer-encoding (multiple headers)"] =
    "the body is declared deflate-coded but is not deflate data: 400",
  -- the rest are in llhttp's own scope (its method/version tables)
  ["method.md#SOURCE request with ICE"] =
    "ICE/1.0 is not an HTTP version: a bad request line is answered 400",
  ["method.md#OPTIONS request with RTSP"] =
    "RTSP/1.0 is not an HTTP version: a bad request line is answered 400",
  ["method.md#ANNOUNCE request with RTSP"] =
    "RTSP/1.0 is not an HTTP version (and ANNOUNCE is no HTTP method): 400",
  ["sample.md#No HTTP version"] =
    "an HTTP/0.9 simple request has no version: a bad request line is answered 400",
}

-- The data sits beside the repository in CI; a clone of the repository
-- alone has none: say so on one line and skip, rather than fail.
local f = io.open(CASES, "rb")
if not f then
  t.test("llhttp request cases", function() end, { skip = CASES .. " not found "
    .. "(the shared test data sits beside the repository in CI)" })
  return
end
local cases = raw.json_decode(f:read("a"))
f:close()

-- One server for the whole file; the handler records what it was given.
local got = {}
local srv = http.listen("127.0.0.1", 0, function(req)
  local body = req:body() -- a malformed or truncated body raises: not recorded
  got[#got + 1] = { method = req.method, path = req.path, body = body }
  if req.method == "HEAD" then return 200, "" end
  return 200, "ok"
end)

-- Wait until the server has finished with every connection, so each case
-- starts clean and leaves no connection task behind.
local function settle()
  loom.timeout(5, function()
    while next(srv.conns) do
      local task = next(srv.conns)
      pcall(task.await, task)
      srv.conns[task] = nil
    end
  end)
end

local summary = { accept = { 0, 0 }, reject = { 0, 0 }, deviation = { 0, 0 } }

local function describe(c, responses, rest, info)
  local st = {}
  for i, r in ipairs(responses) do st[i] = r.status end
  return ("%s: expect %s, requests %d; got statuses {%s}, rest %q, handler saw %d, %s"):format(
    c.id, c.expect, c.requests, table.concat(st, ","), rest:sub(1, 60), #got,
    info.timeout and "timed out" or info.closed and "closed" or tostring(info.err))
end

local function run_case(c, bytes)
  got = {}
  local data, info = raw.exchange(srv.port, bytes)
  settle()
  local responses, rest = raw.parse(data)
  local finals = {}
  for _, r in ipairs(responses) do
    if r.status >= 200 then finals[#finals + 1] = r.status end
  end
  local what = describe(c, responses, rest, info)
  t.ok(not info.timeout, "the server did not close: " .. what)
  t.eq(rest, "", "unparsable bytes after the responses: " .. what)
  local kind = DEVIATIONS[c.id] and "deviation" or c.expect
  summary[kind][2] = summary[kind][2] + 1
  local requests = kind == "deviation" and 0 or c.requests
  if kind == "accept" then
    for i = 1, c.requests do
      t.ok(finals[i] and finals[i] >= 200 and finals[i] < 300, "not served: " .. what)
    end
    -- after them only a refusal of an incomplete message, never a 2xx
    t.ok(#finals <= c.requests + 1, "too many responses: " .. what)
    if finals[c.requests + 1] then
      t.ok(finals[c.requests + 1] >= 400, "a response to an incomplete request: " .. what)
    end
    t.eq(#got, c.requests, "handler calls: " .. what)
  else
    for i = 1, math.min(#finals, requests) do
      t.ok(finals[i] < 300, "an early request was refused: " .. what)
    end
    t.ok(#finals <= requests + 1, "responses past the error: " .. what)
    if #finals == requests + 1 then
      t.ok(finals[#finals] >= 400, "not refused: " .. what)
      t.eq(responses[#responses].headers.connection, "close", "refusal keeps the connection: " .. what)
    end
    t.ok(#got <= requests, "the handler saw a request past the error: " .. what)
    if kind == "deviation" then
      t.ok(finals[1] and finals[1] >= 400,
        "a deviation must be refused with a status: " .. what)
    end
  end
  summary[kind][1] = summary[kind][1] + 1
end

t.test("the case file is complete and the deviations name real accept cases", function()
  t.eq(#cases, 133)
  local ids = {}
  for _, c in ipairs(cases) do ids[c.id] = c end
  for id in pairs(DEVIATIONS) do
    t.ok(ids[id], "deviation names no case: " .. id)
    t.eq(ids[id].expect, "accept", id)
  end
end)

for i, c in ipairs(cases) do
  local bytes = raw.base64_decode(c.raw)
  t.test(("llhttp %d %s (%s)"):format(i, c.id, c.expect), function()
    run_case(c, bytes)
  end)
end

t.test("summary", function()
  io.stdout:write(("llhttp request cases: accept %d/%d, reject %d/%d, deviations %d/%d (refused more strictly than llhttp)\n")
    :format(summary.accept[1], summary.accept[2], summary.reject[1], summary.reject[2],
      summary.deviation[1], summary.deviation[2]))
  for id, why in pairs(DEVIATIONS) do io.stdout:write("  deviation: ", id, ": ", why, "\n") end
  t.eq(summary.accept[1] + summary.reject[1] + summary.deviation[1], #cases)
  srv:shutdown()
end)
