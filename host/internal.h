/*
** internal.h -- what crosses files inside libloom. Everything else is static.
*/
#ifndef LOOM_INTERNAL_H
#define LOOM_INTERNAL_H

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>
#include "loom.h"

typedef struct task task_t;
typedef struct scope scope_t;
typedef struct group group_t;

/* An intrusive FIFO of waiting tasks (linked through task.w.list). */
typedef struct tlist {
  task_t *head, *tail;
} tlist_t;

/* A deadline in the runtime's heap (one uv_timer serves them all). */
typedef struct tentry {
  uint64_t due;  /* uv_hrtime() nanoseconds */
  uint32_t idx;  /* 1-based position in the heap; 0 when not armed */
  uint8_t kind;  /* TE_SLEEP, TE_SCOPE */
} tentry_t;

enum { TE_SLEEP = 1, TE_SCOPE };

/* Task states, as task:status() reports them (T_NEW, T_READY, T_WAIT are
** "pending"/"running" to scripts). */
enum { T_NEW, T_READY, T_WAIT, T_RUNNING, T_DONE, T_FAILED, T_CANCELLED };
#define task_finished(t) ((t)->status >= T_DONE)

/* Task flags. */
#define TF_CANCEL 0x01    /* cancellation requested, not yet raised */
#define TF_CANCELLED 0x02 /* a cancelled error was raised inside the task */
#define TF_MAIN 0x04      /* the main task */
#define TF_SHIELD 0x08    /* the current wait is not interrupted */
#define TF_WAITED 0x10    /* someone awaited the result */

/* How a suspended task is woken. */
enum { WAKE_VALUES, WAKE_INTERRUPT, WAKE_ERROR };

typedef void (*wait_cancel_fn)(task_t *t);

struct task {
  lua_State *co;
  task_t *rnext;         /* ready queue */
  task_t *lprev, *lnext; /* all unfinished tasks */
  union {                /* where a waiting task sits: a list or the heap */
    struct {
      task_t *prev, *next;
      tlist_t *list;
    } l;
    tentry_t tm;
  } w;
  wait_cancel_fn wcancel; /* aborts the pending operation; NULL: none */
  const char *wwhat;      /* what it waits on, for deadlock reports */
  void *wdata;            /* the operation's own data */
  tlist_t awaiters;
  scope_t *scopes; /* innermost first */
  group_t *group;  /* owning group, if any */
  int ref;         /* registry reference while unfinished */
  uint32_t id;
  int nvals;       /* values pushed on co for the resume / results */
  uint8_t status, flags, wake;
};

/* A timeout or group cancel scope of one task; lives in a userdata on the
** task's stack, so it outlives every wait inside it. */
enum { SCOPE_TIMEOUT = 1, SCOPE_GROUP };
struct scope {
  tentry_t tm; /* must stay first: heap entries are cast back to scopes */
  scope_t *parent;
  task_t *task;
  double secs;
  int kind, expired, err_ref;
};

struct loom {
  lua_State *L;
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int own;
  uv_idle_t idle;       /* keeps poll from blocking while tasks are ready */
  uv_prepare_t prepare; /* runs ready tasks before poll */
  uv_check_t check;     /* ... and after I/O callbacks */
  uv_timer_t timer;     /* the earliest deadline of the heap */
  uv_async_t async;     /* loom_wakeup and interrupts */
  uv_timer_t step_timer;
  task_t *rhead, *rtail;
  task_t *live;
  size_t nlive;
  task_t *current;
  tentry_t **heap;
  size_t nheap, capheap;
  int in_timer_cb;
  uint64_t armed;       /* due time the uv timer is armed for; 0 none */
  int exit_status;
  int exiting;          /* process.exit or an escaped main error */
  int closing;          /* loom_free in progress */
  char *errmsg;
  size_t mem_used, mem_limit;
  unsigned libs;
  uint32_t next_id;
  int main_ref;         /* the main task while it runs */
  volatile sig_atomic_t interrupted;
  int interrupt_status;
  int argc;
  char **argv;
  int report_deadlock;  /* loom_run reports waits nothing can wake */
};

/* runtime.c */
loom_t *rt_get(lua_State *L);
void rt_set_error(loom_t *rt, const char *msg);
void rt_ensure_running(loom_t *rt);
void rt_open(lua_State *L);

/* error.c: every runtime failure seen by scripts is one of these. */
void err_push(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...);
int err_raise(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...);
int err_uv(lua_State *L, int uverr, const char *kind, const char *what);
int err_is_kind(lua_State *L, int idx, const char *kind);
void err_open(lua_State *L);

/* task.c */
extern char task_tag; /* the light userdata a host yield carries */
task_t *task_current(lua_State *L);
task_t *task_check_current(lua_State *L, const char *what);
task_t *task_spawn(lua_State *L, int nargs); /* fn+args -> Task on stack */
task_t *task_check(lua_State *L, int idx);
task_t *task_test(lua_State *L, int idx);
int task_wait(lua_State *L, task_t *t, wait_cancel_fn cancel, void *wdata,
              const char *what, lua_KContext ctx, lua_KFunction k);
int task_resumed(lua_State *L, task_t *t);
int task_yield(lua_State *L, task_t *t);
void task_wake(loom_t *rt, task_t *t, int nvals);
void task_wake_error(loom_t *rt, task_t *t);
void task_wake_undo(loom_t *rt, task_t *t, int nvals, wait_cancel_fn undo);
void task_check_callable(lua_State *L, int idx);
void *udata_check(lua_State *L, int idx, const char *tname);
void task_abort(loom_t *rt, task_t *t);
int task_cancel(loom_t *rt, task_t *t);
void task_make_ready(loom_t *rt, task_t *t);
int task_interrupted(task_t *t);
int task_raise_interrupt(lua_State *L, task_t *t);
int task_push_interrupt(lua_State *L, task_t *t);
void task_drain(loom_t *rt);
void task_report_waits(loom_t *rt);
void task_cancel_all(loom_t *rt);
void task_open(lua_State *L);
int task_push_results(lua_State *L, task_t *t);

void tlist_push(tlist_t *l, task_t *t);
void tlist_remove(task_t *t);
task_t *tlist_pop(tlist_t *l);
void tlist_cancel(task_t *t); /* a wait_cancel_fn for list waits */
void tlist_wake_all(loom_t *rt, tlist_t *l);

/* timer.c */
void heap_push(loom_t *rt, tentry_t *e);
void heap_remove(loom_t *rt, tentry_t *e);
void timer_cb(uv_timer_t *h);
uint64_t timer_due(double secs);
void scope_push(task_t *t, scope_t *sc);
void scope_pop(loom_t *rt, scope_t *sc);
void scope_push_error(lua_State *L, scope_t *sc);
void scope_expire(loom_t *rt, scope_t *sc);
int scope_owns_error(lua_State *L, scope_t *sc, int idx);
void timer_open(lua_State *L);

/* group.c, sync.c, future.c */
void group_child_done(loom_t *rt, task_t *t);
void group_open(lua_State *L);
void sync_open(lua_State *L);
void future_open(lua_State *L);

/* modules.c: bundled Lua modules (generated) and preload registration. */
void modules_preload(lua_State *L, unsigned libs);
int modules_load(lua_State *L, const char *name);
int luaopen_loom(lua_State *L);

/* vbuf.c: values copied into C memory to cross threads (worker, sqlite). */
typedef struct vbuf {
  char *p;
  size_t len, cap;
  int oom; /* a write failed for lack of memory; the buffer is incomplete */
} vbuf_t;
enum { VT_NIL, VT_FALSE, VT_TRUE, VT_INT, VT_FLT, VT_STR, VT_BLOB, VT_TAB, VT_END };
typedef struct vval {
  int tag;
  int64_t i;
  double d;
  const char *s; /* VT_STR, VT_BLOB: bytes inside the buffer */
  size_t n;      /* string length; VT_TAB: size hint */
} vval_t;
void vbuf_free(vbuf_t *b);
void vbuf_put_raw(vbuf_t *b, const void *p, size_t n);
void vbuf_put_tag(vbuf_t *b, int tag);
void vbuf_put_uint(vbuf_t *b, uint64_t n);
void vbuf_put_int(vbuf_t *b, int64_t i);
void vbuf_put_flt(vbuf_t *b, double d);
void vbuf_put_str(vbuf_t *b, int tag, const char *s, size_t n);
int vbuf_get_uint(const char **pos, const char *end, uint64_t *out);
int vbuf_get(const char **pos, const char *end, vval_t *v);
int vbuf_encode(lua_State *L, int idx, vbuf_t *b, const char *what);
void vbuf_decode(lua_State *L, const char **pos, const char *end);

/* sqlite_exec.c: one request on a database connection, run on the
** connection's own thread; no Lua there (sqlite.c is the binding). */
typedef struct sqlconn sqlconn_t;
enum { SQ_OPEN, SQ_EXEC, SQ_QUERY, SQ_FIRST, SQ_EXECUTE };
#define SQ_READONLY 0x01 /* sqlreq.flags for SQ_OPEN */
#define SQ_NOCREATE 0x02
#define SQ_NOWAL 0x04
#define SQ_NAMED 0x08    /* params came as one table */
typedef struct sqlreq {
  int op, flags;
  char *sql;     /* SQL text; for SQ_OPEN the path */
  size_t sqllen;
  vbuf_t params; /* count, then key/value pairs (key: position or name) */
  int busy_ms, cache_max; /* SQ_OPEN */
  atomic_int cancel;      /* set by another thread: stop running it */
  /* results */
  int rc;        /* SQLITE_OK or an extended result code */
  char *errmsg;  /* malloc'd, when rc is not SQLITE_OK */
  vbuf_t out;    /* SQ_QUERY, SQ_FIRST: column count, names, rows of values */
  int64_t nrows, changes, last_id;
} sqlreq_t;
void sqlx_run(sqlconn_t **c, sqlreq_t *r);
void sqlx_close(sqlconn_t *c);
void sqlx_interrupt(sqlconn_t *c, sqlreq_t *r);
const char *sqlx_code_name(int rc);
const char *sqlx_version(void);

#endif
