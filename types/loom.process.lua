---@meta loom.process

---@class loom.RunResult
---@field code integer?
---@field signal string?
---@field stdout string?
---@field stderr string?
---@field ok boolean

---@class loom.PipeStatus
---@field code integer?
---@field signal string?
---@field ok boolean
---@field stderr string?

---@class loom.PipeResult: loom.RunResult
---@field statuses loom.PipeStatus[]

---@class loom.Process
---@field pid integer
---@field stdin loom.Stream?
---@field stdout loom.Stream?
---@field stderr loom.Stream?
local Process = {}
---@return integer? code, string? signal
function Process:wait() end
---@param signal (string|integer)?
---@return boolean
function Process:kill(signal) end

---@class loom.SignalHandle
local SignalHandle = {}
function SignalHandle:close() end

local process = {}
---@type integer
process.pid = 0
---@type loom.Stream
process.stdin = nil
---@type loom.Stream
process.stdout = nil
---@type loom.Stream
process.stderr = nil
---@param cmd string|string[]
---@param opts {input: string?, cwd: string?, env: table<string,string>?, timeout: number?, capture: boolean?, kill_grace: number?, process_group: boolean?}?
---@return loom.RunResult
function process.run(cmd, opts) end
--- pipe(cmd1, cmd2, ... [, opts]): stdout of each to stdin of the next;
--- opts as run's. ok only when every command succeeded (pipefail).
---@param ... string|string[]|{input: string?, cwd: string?, env: table<string,string>?, timeout: number?, capture: boolean?, kill_grace: number?, process_group: boolean?}
---@return loom.PipeResult
function process.pipe(...) end
---@param cmd string|string[]
---@param opts {stdin: string?, stdout: string?, stderr: string?, cwd: string?, env: table<string,string>?, process_group: boolean?}?
---@return loom.Process
function process.spawn(cmd, opts) end
---@param name string
---@param fn fun(name: string)
---@return loom.SignalHandle
function process.on_signal(name, fn) end
---@return string?
function process.getenv(name) end
function process.setenv(name, value) end
---@return string
function process.cwd() end
---Whether the descriptor (or "stdin"/"stdout"/"stderr") is a terminal.
---@param fd integer|string
---@return boolean
function process.isatty(fd) end
function process.chdir(dir) end
---@param code (integer|boolean)?
function process.exit(code) end
return process
