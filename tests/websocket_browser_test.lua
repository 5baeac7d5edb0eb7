-- examples/websocket_chat.html in a real browser: headless Chromium opens the
-- page twice, in two browser contexts (two separate users), answers the
-- page's name prompt, types a message into one and sees it in the other.
--
-- Chromium is driven over the DevTools protocol (CDP) from this file alone:
-- loom's WebSocket client talks to Chromium's DevTools server, loom's HTTP
-- client reads /json/version. Skipped when Chromium is not installed
-- (scripts/test installs it: LOOM_SETUP_EXTRA=chromium scripts/setup).
local loom = require "loom"
local t = require "loom.test"
local http = require "loom.http"
local json = require "loom.json"
local fs = require "loom.fs"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local CHROMIUM = "/usr/bin/chromium"
local WAIT = 10 -- seconds, the bound of every single wait on Chromium

-- Chromium runs with everything it writes under dir: its profile, and as
-- its home what it keeps outside the profile (crash reports, dconf). Its
-- standard error is collected while it runs: it says where its DevTools
-- server listens, and its last lines explain a failure.
local function start_chromium(dir)
  local p = process.spawn({ CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--user-data-dir=" .. dir .. "/profile",
    "--remote-debugging-port=0", "about:blank" }, { stdout = "null", stderr = "pipe",
    env = { HOME = dir, XDG_CONFIG_HOME = dir .. "/config", XDG_CACHE_HOME = dir .. "/cache" } })
  local c = { p = p, log = "", listening = loom.event() }
  c.reader = loom.spawn(function()
    while true do
      local chunk = p.stderr:read()
      if not chunk then break end
      c.log = (c.log .. chunk):sub(-65536)
      c.url = c.url or c.log:match("DevTools listening on (ws://%S+)\n")
      if c.url then c.listening:set() end
    end
    c.listening:set() -- at the end too, so no one waits for a dead browser
  end)
  return c
end

-- Chromium's own messages, less the noise it makes on a machine without a
-- D-Bus; for failure messages.
local function chromium_log(c)
  local lines = {}
  for line in c.log:gmatch("[^\n]+") do
    if not line:find("dbus", 1, true) then lines[#lines + 1] = line end
  end
  return table.concat(lines, "\n", math.max(1, #lines - 20))
end

-- A CDP connection: one WebSocket to the browser; the pages are sessions on
-- it (flat mode), named by sessionId in each message. A reader task hands
-- each response to its caller and queues the events of each session.
local Cdp = {}
Cdp.__index = Cdp

local function cdp_connect(url)
  local self = setmetatable({ ws = http.websocket(url, { timeout = WAIT }), last_id = 0,
    pending = {}, events = {} }, Cdp)
  self.reader = loom.spawn(function()
    while true do
      local text = self.ws:receive()
      if not text then break end
      local msg = json.decode(text)
      if msg.id then
        local q = self.pending[msg.id]
        self.pending[msg.id] = nil
        if q then q:put(msg) end
      else
        self:event_queue(msg.sessionId):put(msg)
      end
    end
    self.closed = true
    for _, q in pairs(self.pending) do q:close() end
    for _, q in pairs(self.events) do q:close() end
  end)
  return self
end

function Cdp:event_queue(session)
  local key = session or ""
  self.events[key] = self.events[key] or loom.queue()
  return self.events[key]
end

-- Send a command (to the browser when session is nil) and wait for its result.
function Cdp:call(session, method, params, seconds)
  if self.closed then error(method .. ": the DevTools connection is closed", 2) end
  self.last_id = self.last_id + 1
  local id, q = self.last_id, loom.queue(1)
  self.pending[id] = q
  self.ws:send(json.encode({ id = id, sessionId = session, method = method,
    params = params or json.object() }))
  local ok, msg = pcall(loom.timeout, seconds or WAIT, q.get, q)
  self.pending[id] = nil
  if not ok then error(("%s: %s"):format(method, tostring(msg)), 2) end
  if not msg then error(method .. ": the DevTools connection closed", 2) end
  if msg.error then error(("%s: %s"):format(method, json.encode(msg.error)), 2) end
  return msg.result
end

-- Wait for the next event called method in a session; earlier ones are dropped.
function Cdp:event(session, method)
  local q = self:event_queue(session)
  return loom.timeout(WAIT, function()
    while true do
      local msg = q:get()
      if not msg then error("the DevTools connection closed waiting for " .. method) end
      if msg.method == method then return msg.params end
    end
  end)
end

function Cdp:close()
  self.ws:close()
  if not pcall(loom.timeout, WAIT, self.reader.await, self.reader) then
    self.reader:cancel()
    pcall(self.reader.await, self.reader)
  end
end

-- A page: the chat page opened by one user in a browser context of its own.
local Page = {}
Page.__index = Page

local function open_page(cdp, url, name)
  local ctx = cdp:call(nil, "Target.createBrowserContext").browserContextId
  local target = cdp:call(nil, "Target.createTarget",
    { url = "about:blank", browserContextId = ctx }).targetId
  local session = cdp:call(nil, "Target.attachToTarget",
    { targetId = target, flatten = true }).sessionId
  local page = setmetatable({ cdp = cdp, ctx = ctx, target = target, session = session,
    name = name }, Page)
  page:call("Page.enable")
  page:call("Page.navigate", { url = url })
  -- the page asks for a name with prompt(): the user types theirs
  local dialog = cdp:event(session, "Page.javascriptDialogOpening")
  t.eq({ dialog.type, dialog.message, dialog.defaultPrompt }, { "prompt", "Your name?", "guest" })
  page:call("Page.handleJavaScriptDialog", { accept = true, promptText = name })
  return page
end

function Page:call(method, params, seconds)
  return self.cdp:call(self.session, method, params, seconds)
end

-- Evaluate a JavaScript expression in the page (a promise is awaited); its value.
function Page:eval(expr, seconds)
  local r = self:call("Runtime.evaluate",
    { expression = expr, returnByValue = true, awaitPromise = true }, seconds)
  if r.exceptionDetails then
    error(("%s: %s"):format(self.name, json.encode(r.exceptionDetails)), 2)
  end
  return r.result.value
end

local LINES = "Array.from(document.querySelectorAll('#log p'), p => p.textContent)"

-- The lines of the page's log once it shows `want`. No polling: a promise in
-- the page resolves when a MutationObserver sees the line arrive.
function Page:wait_line(want)
  local ok, lines = pcall(self.eval, self, ([[
    new Promise(resolve => {
      const log = document.getElementById('log');
      const check = () => {
        const lines = %s;
        if (lines.includes(%s)) { observer.disconnect(); resolve(lines); }
      };
      const observer = new MutationObserver(check);
      observer.observe(log, { childList: true });
      check();
    })]]):format(LINES, json.encode(want)))
  if not ok then
    local _, now = pcall(self.eval, self, LINES)
    error(("%s's page never showed %q (%s); it shows: %s"):format(self.name, want,
      tostring(lines), json.encode(now)), 2)
  end
  return lines
end

-- Type a line into the text field and press Enter, as a user does.
function Page:say(text)
  self:call("Page.bringToFront")
  t.eq(self:eval("document.getElementById('text').focus(); document.activeElement.id"), "text")
  self:call("Input.insertText", { text = text })
  for _, type in ipairs { "keyDown", "keyUp" } do
    self:call("Input.dispatchKeyEvent", { type = type, key = "Enter", code = "Enter",
      windowsVirtualKeyCode = 13, text = type == "keyDown" and "\r" or nil })
  end
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function unbase64(s)
  local val = {}
  for i = 1, 64 do val[B64:byte(i)] = i - 1 end
  s = s:gsub("[^%w+/]", "")
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = val[s:byte(i)], val[s:byte(i + 1)], val[s:byte(i + 2)], val[s:byte(i + 3)]
    local n = (a << 18) | (b << 12) | ((c or 0) << 6) | (d or 0)
    out[#out + 1] = string.char(n >> 16, (n >> 8) & 255, n & 255):sub(1, d and 3 or c and 2 or 1)
  end
  return table.concat(out)
end

-- Run fn(defer, explain): what it defers runs afterwards in reverse order,
-- whether it failed or not; the first error is raised, followed by what the
-- functions given to explain return.
local function with_cleanup(fn)
  local undo, notes = {}, {}
  local ok, err = xpcall(fn, debug.traceback, function(f) undo[#undo + 1] = f end,
    function(f) notes[#notes + 1] = f end)
  if not ok then
    for _, note in ipairs(notes) do err = err .. "\n" .. note() end
  end
  for i = #undo, 1, -1 do
    local ok2, err2 = xpcall(undo[i], debug.traceback)
    if ok and not ok2 then ok, err = false, err2 end
  end
  if not ok then error(err, 0) end
end

t.test("two users chat through the page in headless Chromium", function()
  if not fs.exists(CHROMIUM) then t.skip(CHROMIUM .. " is not installed") end
  with_cleanup(function(defer, explain)
    -- the chat room
    local chat = process.spawn({ LOOM, "examples/websocket_chat.lua", "0" }, { stdout = "pipe" })
    defer(function()
      chat:kill("SIGTERM")
      local ok, code = pcall(loom.timeout, WAIT, chat.wait, chat)
      if not ok then chat:kill("SIGKILL"); chat:wait() end
      chat.stdout:close()
      t.eq(code, 0, "the chat example's exit status")
    end)
    local line = loom.timeout(WAIT, chat.stdout.read_line, chat.stdout)
    local port = math.tointeger(tonumber(line and line:match("^listening on (%d+)$")))
    t.ok(port, "no 'listening on' line: " .. tostring(line))
    local page_url = ("http://127.0.0.1:%d/"):format(port)

    -- the browser, in a new profile and home of its own
    local dir = fs.mkdtemp()
    defer(function() fs.remove(dir, { recursive = true }) end)
    local c = start_chromium(dir)
    defer(function()
      -- unless Browser.close was answered, SIGTERM (a clean shutdown too);
      -- a browser still running after WAIT seconds is killed
      if not c.closing then c.p:kill("SIGTERM") end
      if not pcall(loom.timeout, WAIT, c.p.wait, c.p) then
        c.p:kill("SIGKILL")
        c.p:wait()
      end
      -- its helper processes hold the pipe until they end too
      if not pcall(loom.timeout, WAIT, c.reader.await, c.reader) then
        c.reader:cancel()
        pcall(c.reader.await, c.reader)
      end
      c.p.stderr:close()
    end)
    explain(function() return "-- Chromium said:\n" .. chromium_log(c) end)
    loom.timeout(WAIT, c.listening.wait, c.listening)
    t.ok(c.url, "Chromium did not say where DevTools listens")

    -- its DevTools server, over loom's HTTP client and then its WebSocket client
    local devtools = c.url:match("^ws://([^/]+)/")
    local version = http.get(("http://%s/json/version"):format(devtools), { timeout = WAIT })
    http.close_idle()
    t.eq(version.status, 200)
    t.eq(version:json().webSocketDebuggerUrl, c.url)
    t.ok(version:json().Browser:find("^Chrome/"), version.body)
    local active_port = fs.read_file(dir .. "/profile/DevToolsActivePort"):match("^(%d+)\n")
    t.eq(devtools, "127.0.0.1:" .. active_port)
    local cdp = cdp_connect(c.url)
    defer(function()
      if not c.closing then c.closing = pcall(cdp.call, cdp, nil, "Browser.close") end
      cdp:close()
    end)

    -- alice, then bob, join; each sees who joined after them
    local alice = open_page(cdp, page_url, "alice")
    t.eq(alice:wait_line("alice joined"), { "connected as alice", "alice joined" })
    local bob = open_page(cdp, page_url, "bob")
    t.eq(bob:wait_line("bob joined"), { "connected as bob", "bob joined" })
    alice:wait_line("bob joined")

    alice:say("hi bob")
    bob:wait_line("alice: hi bob")
    t.eq(alice:eval("document.getElementById('text').value"), "", "the field is emptied")
    bob:say("hello alice \u{2713}")
    t.eq(alice:wait_line("bob: hello alice \u{2713}"), { "connected as alice",
      "alice joined", "bob joined", "alice: hi bob", "bob: hello alice \u{2713}" })
    t.eq(bob:wait_line("bob: hello alice \u{2713}"), { "connected as bob", "bob joined",
      "alice: hi bob", "bob: hello alice \u{2713}" })
    t.eq(alice:eval("document.querySelectorAll('#log p.info').length"), 3,
      "connected, joined, joined are shown as info")

    -- for a person to look at when something is off
    local shot = alice:call("Page.captureScreenshot", { format = "png" })
    fs.write_file((LOOM:match("^(.*)/[^/]*$") or ".") .. "/websocket_browser.png",
      unbase64(shot.data))

    -- bob closes his tab: his WebSocket closes, the room tells alice
    cdp:call(nil, "Target.closeTarget", { targetId = bob.target })
    alice:wait_line("bob left")
    cdp:call(nil, "Browser.close")
    c.closing = true
  end)
end, { timeout = 90 })
