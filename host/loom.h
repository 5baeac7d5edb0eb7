/*
** loom.h -- the embedding API of the loom runtime.
**
** One loom_t is one Lua 5.4 state plus one libuv loop. Every Lua coroutine
** run by it is a task that can wait on timers, I/O and other tasks without
** blocking the loop. A loom_t is used from one thread; only loom_wakeup may
** be called from another.
*/
#ifndef LOOM_H
#define LOOM_H

#include <stddef.h>
#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_VERSION "0.1.0"

/* Bits of loom_options.libs: which bundled modules scripts may require. */
#define LOOM_LIB_CORE    0x0001u /* loom, loom.test (always on) */
#define LOOM_LIB_NET     0x0002u /* loom.net */
#define LOOM_LIB_HTTP    0x0004u /* loom.http */
#define LOOM_LIB_FS      0x0008u /* loom.fs */
#define LOOM_LIB_PROCESS 0x0010u /* loom.process */
#define LOOM_LIB_JSON    0x0020u /* loom.json */
#define LOOM_LIB_SQLITE  0x0040u /* loom.sqlite */
#define LOOM_LIB_WORKER  0x0080u /* loom.worker */
#define LOOM_LIB_LPEG    0x0100u /* lpeg, re */
#define LOOM_LIB_PG      0x0200u /* loom.pg */
#define LOOM_LIB_REDIS   0x0400u /* loom.redis */
/* Capabilities of the standard library. A mask with none of these bits
** keeps the whole standard library (as before they existed); a mask with
** LOOM_LIB_BASE gives only what its bits grant. */
#define LOOM_LIB_BASE    0x0800u /* the safe core: base functions (load of text
                                 ** only), string (no dump), table, math, utf8,
                                 ** coroutine, os.time/clock/date/difftime,
                                 ** debug.traceback, collectgarbage("count",
                                 ** "step", "collect", "isrunning") */
#define LOOM_LIB_IO      0x1000u /* io, dofile, loadfile */
#define LOOM_LIB_OS      0x2000u /* all of os (execute, exit, getenv, remove...) */
#define LOOM_LIB_OS_IO   (LOOM_LIB_IO | LOOM_LIB_OS)
#define LOOM_LIB_DEBUG   0x4000u /* all of debug; all of collectgarbage */
#define LOOM_LIB_NATIVE  0x8000u /* package.loadlib, the C searchers (cpath),
                                 ** load of binary chunks, string.dump */
#define LOOM_LIB_PATH    0x10000u /* require searches package.path; without it
                                 ** only preloaded modules and module_dir */
#define LOOM_LIBS_STD    (LOOM_LIB_BASE | LOOM_LIB_OS_IO | LOOM_LIB_DEBUG | \
                          LOOM_LIB_NATIVE | LOOM_LIB_PATH)
#define LOOM_LIBS_ALL    0xffffffffu
/* For scripts the host did not write (mods, plugins): loom's tasks, timers
** and sync, loom.json, lpeg; no io, no os but its clocks, no debug but
** traceback, no native code, require limited to preload and module_dir. */
#define LOOM_LIBS_SANDBOX (LOOM_LIB_CORE | LOOM_LIB_BASE | LOOM_LIB_JSON | \
                           LOOM_LIB_LPEG)

typedef struct loom loom_t;

typedef struct loom_options {
  uv_loop_t *loop;     /* NULL: loom creates and owns its loop; else the host's */
  int argc;            /* script arguments, for `arg` (argv[0] is the script) */
  char **argv;
  unsigned libs;       /* LOOM_LIBS_ALL, or a mask of LOOM_LIB_* (0 = all) */
  size_t memory_limit; /* bytes the Lua state may hold; 0 = no limit */
  /* Milliseconds a task may run between two waits (0 = no limit). Past it
  ** the task gets an error of kind "timeout" raised where it runs; still
  ** running without a wait after a second budget, it is ended for good and
  ** reported. Checked every 1000 Lua instructions, not inside a C call. A
  ** loom_step that has used it starts no more tasks. */
  unsigned cpu_budget_ms;
  /* Directory whose Lua files require may load when the mask lacks
  ** LOOM_LIB_PATH ("name.sub" -> dir/name/sub.lua, dir/name/sub/init.lua).
  ** NULL: none. Copied. */
  const char *module_dir;
} loom_options;

/* Create a runtime. NULL opts: own loop, all libraries, no memory limit.
** Returns NULL when memory or the loop cannot be had. */
loom_t *loom_new(const loom_options *opts);

lua_State *loom_state(loom_t *rt);
uv_loop_t *loom_loop(loom_t *rt);

/* Load a file ("-" or NULL: stdin) or a string and spawn it as the main
** task. Returns 0, or non-zero after a syntax or I/O error (see loom_error). */
int loom_dofile(loom_t *rt, const char *path);
int loom_dostring(loom_t *rt, const char *code, const char *chunkname);

/* Pop a function and nargs arguments from loom_state() and spawn a task for
** them; the task is left on the stack. Returns 0. */
int loom_spawn(loom_t *rt, int nargs);

/* Run until no task is pending and nothing keeps the loop alive. Returns the
** exit status: 0, 1 after an unhandled error or deadlock, or the status given
** to process.exit. */
int loom_run(loom_t *rt);

/* One bounded loop turn: never blocks with timeout_ms 0, blocks at most
** timeout_ms otherwise (negative: until something happens). Returns 1 while
** work is pending (ready tasks, active handles or timers), else 0. */
int loom_step(loom_t *rt, int timeout_ms);

/* Thread-safe: make a loom_step blocked in another thread return. */
void loom_wakeup(loom_t *rt);

/* The last error message with its traceback, or NULL. */
const char *loom_error(loom_t *rt);

/* Push the last error value itself (a loom error object keeps its kind,
** code and fields) on loom_state()'s stack, nil when there is none;
** returns its Lua type. */
int loom_push_error(loom_t *rt);

/* Where reports go instead of stderr. kind: "error" (the main task
** failed), "unhandled" (a task failed and nobody awaited it), "killed" (a
** task ran past twice its cpu_budget_ms and was ended), "deadlock" (tasks
** wait for what nothing can bring), "warning" (Lua's warn). text has no
** trailing newline. fn NULL: stderr again. */
typedef void (*loom_report_fn)(void *ud, const char *kind, const char *text);
void loom_set_report(loom_t *rt, loom_report_fn fn, void *ud);

/* For programs like the loom command: Ctrl-C stops the runtime with exit
** status 130 (unless a script installs its own SIGINT handler). NULL restores
** the default disposition. */
void loom_catch_sigint(loom_t *rt);

/* For the loom command under `loom -w N`: loom_worker_init reads (and
** clears) LOOM_WORKER, set by the supervisor; it returns 1 in a worker,
** whose runtimes then have loom.workers and SO_REUSEPORT listeners.
** loom_worker_start, once the script is loaded, makes the worker tell the
** supervisor when it listens and drain its servers on SIGTERM. */
int loom_worker_init(void);
void loom_worker_start(loom_t *rt);

/* Cancel what is left, close every handle, free everything. */
void loom_free(loom_t *rt);

/* Awaitables settled by the host. loom_future_new pushes the awaitable on L
** (any thread of the runtime); scripts call :await() on it. */
typedef struct loom_future loom_future_t;
loom_future_t *loom_future_new(lua_State *L);
/* Pop nvalues from loom_state()'s stack and settle the future with them. */
void loom_future_resolve(loom_future_t *f, int nvalues);
void loom_future_reject(loom_future_t *f, const char *message);

#ifdef __cplusplus
}
#endif
#endif
