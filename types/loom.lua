---@meta loom
-- LuaLS (lua-language-server) annotations for loom. Point the language
-- server at this folder: "workspace.library": ["<loom>/types"].

---@class loom.Error
---@field kind string   "cancelled"|"timeout"|"io"|"closed"|"eof"|"limit"|"busy"|"http"|"tls"|"json"|"sqlite"|"value"
---@field message string
---@field code string?  e.g. "ECONNREFUSED", "ENOENT"
---@field errors any[]? every failure, when several children of a group failed

---@class loom.Task
local Task = {}
---Wait for the task; its results, or raises its error.
---@return any ...
function Task:await() end
---Request cancellation; true if the task was not finished.
---@return boolean
function Task:cancel() end
---@return boolean
function Task:done() end
---@return "pending"|"running"|"done"|"failed"|"cancelled"
function Task:status() end

---@class loom.Group
local Group = {}
---Start a child task owned by the group.
---@param fn function
---@return loom.Task
function Group:spawn(fn, ...) end
---Cancel every child.
function Group:cancel() end

---@class loom.Queue
local Queue = {}
---Put a value (not nil); waits while the queue is full. Raises kind "closed" on a closed queue.
function Queue:put(v) end
---Next value; waits while empty; nil once closed and drained.
---@return any
function Queue:get() end
---@return boolean
function Queue:try_put(v) end
---@return any
function Queue:try_get() end
---@return integer
function Queue:len() end
function Queue:close() end
---@return fun(): any
function Queue:iter() end
---Mark one item got earlier as processed.
function Queue:task_done() end
---Wait until every item put has been marked by task_done.
function Queue:join() end

---@class loom.Event
local Event = {}
function Event:set() end
function Event:clear() end
---@return boolean
function Event:is_set() end
function Event:wait() end

---@class loom.Lock
local Lock = {}
function Lock:acquire() end
function Lock:release() end
---@return boolean
function Lock:locked() end
---Run fn holding the lock; released on error too.
---@return any ...
function Lock:with(fn, ...) end

---@class loom.Semaphore
local Semaphore = {}
function Semaphore:acquire() end
function Semaphore:release() end
---@return boolean
function Semaphore:locked() end
---@return integer
function Semaphore:value() end
---@return any ...
function Semaphore:with(fn, ...) end

---@class loom.Future
local Future = {}
---The values it was set with, or raises its error; waits while pending.
---@return any ...
function Future:await() end
---@return boolean
function Future:done() end
---Settle with these values; raises kind "value" if already settled.
function Future:set(...) end
---Settle with an error, raised unchanged by await.
---@param err any
function Future:fail(err) end
---Settle as cancelled (await raises "cancelled"); false if already settled.
---@return boolean
function Future:cancel() end

---@class loom.Progress
---@field count number
---@field total number?
---@field started number
local Progress = {}
---n more done (default 1); redraws at most every interval seconds.
---@param n number?
function Progress:advance(n) end
---The last redraw and a newline.
function Progress:done() end
---The line as drawn.
---@param now number?
---@return string
function Progress:render(now) end

---@class loom.Workers
---@field id integer this worker's id, 1..count
---@field count integer the number of workers

---@class loomlib
local loom = {}
---@type string
loom.version = ""
---In a worker of `loom -w N`: its id and the number of workers; nil otherwise.
---@type loom.Workers?
loom.workers = nil
---Schedule fn(...) as a new task (it starts on a later turn).
---@param fn function
---@return loom.Task
function loom.spawn(fn, ...) end
---Suspend the current task for s seconds; sleep(0) lets ready tasks run.
---@param s number?
function loom.sleep(s) end
---Monotonic clock, seconds.
---@return number
function loom.now() end
---Wall clock, seconds since the epoch.
---@return number
function loom.time() end
---@return loom.Task?
function loom.current() end
---Run fn(g) with a task group (or, without fn, a group for `<close>`).
---@overload fun(): loom.Group
---@param fn fun(g: loom.Group): ...
---@return any ...
function loom.group(fn) end
---Run functions or await Tasks concurrently; the first result of each, in order.
---@return any ...
function loom.gather(...) end
---The results of the first to finish; the rest are cancelled.
---@return any ...
function loom.race(...) end
---Call fn(...) with a deadline; raises kind "timeout" when it passes.
---@param s number
---@param fn function
---@return any ...
function loom.timeout(s, fn, ...) end
---Call fn(...) so that no cancellation or outer timeout interrupts it; a
---pending interruption is raised when it returns (cleanup that must wait).
---@param fn function
---@return any ...
function loom.shield(fn, ...) end

---Functions or Tasks; iterate their first results (and index) as they finish.
---@return fun(): any, integer
function loom.as_completed(...) end
---fn(item, i) for each item, opts.concurrency (10) at once; results in item order.
---With opts.errors = "collect", also returns a table index -> error (or nil).
---@param items any[]
---@param fn fun(item: any, i: integer): any
---@param opts {concurrency: integer?, errors: ("raise"|"collect")?, progress: (boolean|loom.Progress)?}?
---@return any[] results
---@return table<integer, any>? failures
function loom.map(items, fn, opts) end
---Call fn(attempt) until it returns, with exponential backoff.
---@param fn fun(attempt: integer): ...
---@param opts {attempts: integer?, base: number?, max: number?, jitter: boolean?, on: (fun(err: any, attempt: integer): boolean?)?}?
---@return any ...
function loom.retry(fn, opts) end
---A progress bar on stderr, drawn only on a terminal by default.
---@param total number?
---@param opts {label: string?, width: integer?, interval: number?, output: any?, enabled: boolean?}?
---@return loom.Progress
function loom.progress(total, opts) end
---Parse the script's arguments; --help prints the help and exits.
---@param spec table
---@param argv string[]?
---@return table
function loom.args(spec, argv) end
---A future for tasks to set and await.
---@return loom.Future
function loom.future() end
---@param max integer?
---@return loom.Queue
function loom.queue(max) end
---@return loom.Event
function loom.event() end
---@return loom.Lock
function loom.lock() end
---@param n integer?
---@return loom.Semaphore
function loom.semaphore(n) end
---A new error object.
---@param kind string
---@param message string
---@param code string?
---@return loom.Error
function loom.error(kind, message, code) end
---Run fn(...) as a task until nothing is left (for a stock lua5.4 with loom.so).
---@return any ...
function loom.run(fn, ...) end

return loom
