/*
** sqlite.c -- loom.sqlite: SQLite connections that never block the loop.
**
** Each connection has its own thread and a FIFO of jobs, so the statements
** of one connection run in the order they were issued while the loop and
** every other task go on. A job carries its SQL and parameters in C memory
** (vbuf.c) and brings rows back the same way (sqlite_exec.c does the work
** on the thread). Finished jobs go on a done list and one uv_async per
** connection wakes the loop, which wakes the waiting tasks; a task's
** continuation turns the rows into Lua tables.
**
** Cancelling a waiting task removes its job if it has not started, or
** interrupts it (sqlite3_interrupt) and detaches it: the connection stays
** usable and the job is freed when it comes back.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char *DB_MT = "loom.Db";
static const char *BLOB_MT = "loom.sqlite.Blob";

enum { J_QUEUED, J_RUNNING, J_DONE };

typedef struct sdb sdb_t;

typedef struct sjob {
  struct sjob *next; /* in the queue or the done list */
  task_t *t;         /* the waiting task; NULL once detached (loop thread) */
  sdb_t *s;
  int state;         /* J_* (under the connection's mutex) */
  sqlreq_t r;
} sjob_t;

struct sdb {
  uv_async_t async; /* the thread's "jobs done" signal */
  size_t reserved;  /* of a capped runtime's memory_limit, for SQLite's own */
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t cv;
  /* shared with the thread, under mu */
  sjob_t *qhead, *qtail; /* waiting to run */
  sjob_t *running;
  sjob_t *dhead, *dtail; /* done, for the loop to reap */
  sqlconn_t *conn;       /* set once open; for sqlx_interrupt */
  int stop, exited;
  int idle;              /* the thread sleeps on cv */
  /* loop thread only */
  loom_t *rt;
  char *path;
  int inflight;    /* jobs submitted and not reaped: the handle is ref'd */
  int closed;      /* no new jobs */
  int joined;      /* the thread is gone; the handle is closing */
  hlife_t life;    /* its box and its async handle (see handle.c) */
  tlist_t closers; /* tasks waiting in db:close() */
  task_t *tx_owner;   /* the task whose transaction is open */
  int tx_depth;       /* nesting of its transaction() calls */
  tlist_t tx_waiters; /* other tasks wanting to start one */
};

typedef struct dbbox {
  sdb_t *s;
} dbbox_t;

/* ---- the connection's thread ---- */

static void thread_main(void *arg) {
  sdb_t *s = (sdb_t *)arg;
  sqlconn_t *conn = NULL;
  sjob_t *j;
  uv_mutex_lock(&s->mu);
  for (;;) {
    while (!s->qhead && !s->stop) {
      s->idle = 1;
      uv_cond_wait(&s->cv, &s->mu);
      s->idle = 0;
    }
    if (!(j = s->qhead)) break; /* stopped and nothing left */
    s->qhead = j->next;
    if (!s->qhead) s->qtail = NULL;
    j->state = J_RUNNING;
    s->running = j;
    uv_mutex_unlock(&s->mu);
    sqlx_run(&conn, &j->r);
    uv_mutex_lock(&s->mu);
    s->conn = conn;
    s->running = NULL;
    j->state = J_DONE;
    j->next = NULL;
    if (s->dtail) s->dtail->next = j;
    else {
      s->dhead = j;
      uv_async_send(&s->async); /* the loop takes the whole list */
    }
    s->dtail = j;
  }
  s->conn = NULL;
  uv_mutex_unlock(&s->mu);
  sqlx_close(conn);
  uv_mutex_lock(&s->mu);
  s->exited = 1;
  uv_mutex_unlock(&s->mu);
  uv_async_send(&s->async);
}

/* ---- jobs (loop thread) ---- */

/* A job running sql (copied); NULL without memory. */
static sjob_t *job_new(sdb_t *s, int op, const char *sql, size_t len) {
  sjob_t *j = (sjob_t *)calloc(1, sizeof *j);
  if (!j) return NULL;
  j->s = s;
  j->r.op = op;
  j->r.sqllen = len;
  /* a capped runtime's rows come no bigger than it may hold */
  j->r.mem_limit = j->r.out.max = s->rt->mem_limit;
  if (!(j->r.sql = (char *)malloc(len + 1))) {
    free(j);
    return NULL;
  }
  memcpy(j->r.sql, sql, len);
  j->r.sql[len] = '\0';
  return j;
}

static void job_free(sjob_t *j) {
  free(j->r.sql);
  free(j->r.errmsg);
  vbuf_free(&j->r.params);
  vbuf_free(&j->r.out);
  free(j);
}

/* A woken task was cancelled before it could take its job's outcome. */
static void job_undo(task_t *t) { job_free((sjob_t *)t->wdata); }

static void job_done(sdb_t *s) {
  if (--s->inflight == 0 && !s->closed) uv_unref((uv_handle_t *)&s->async);
}

/* Queue j. The thread is signalled only when it sleeps, and after the
** unlock, so that it does not wake up only to block on the mutex. */
static void submit(sdb_t *s, sjob_t *j) {
  int wake;
  uv_mutex_lock(&s->mu);
  j->state = J_QUEUED;
  j->next = NULL;
  if (s->qtail) s->qtail->next = j;
  else s->qhead = j;
  s->qtail = j;
  wake = s->idle;
  s->idle = 0; /* one signal is enough */
  uv_mutex_unlock(&s->mu);
  if (wake) uv_cond_signal(&s->cv);
  if (s->inflight++ == 0) uv_ref((uv_handle_t *)&s->async);
}

/* The waiting task gave up: drop a queued job; interrupt a running one and
** let it come back detached. The mutex makes sure the interrupt hits this
** job and not the next one. */
static void job_cancel(task_t *t) {
  sjob_t *j = (sjob_t *)t->wdata, **p;
  sdb_t *s = j->s;
  int dropped = 0;
  j->t = NULL;
  uv_mutex_lock(&s->mu);
  if (j->state == J_QUEUED) {
    sjob_t *prev = NULL;
    for (p = &s->qhead; *p; prev = *p, p = &(*p)->next)
      if (*p == j) {
        *p = j->next;
        if (s->qtail == j) s->qtail = prev;
        dropped = 1;
        break;
      }
  } else if (j->state == J_RUNNING) {
    sqlx_interrupt(s->conn, &j->r);
  }
  uv_mutex_unlock(&s->mu);
  if (dropped) {
    job_free(j);
    job_done(s);
  }
}

/* ---- completion and shutdown (loop thread) ---- */

static void sdb_free(sdb_t *s) {
  uv_mutex_destroy(&s->mu);
  uv_cond_destroy(&s->cv);
  free(s->path);
  free(s);
}

static void close_cb(uv_handle_t *h) {
  sdb_t *s = (sdb_t *)h->data;
  s->rt->mem_used -= s->reserved; /* if finish did not */
  s->reserved = 0;
  if (hlife_done(&s->life)) sdb_free(s);
}

/* Close the async handle (once); close_cb frees s if its box is gone. */
static void close_async(sdb_t *s) {
  hlife_close(&s->life, (uv_handle_t *[]){(uv_handle_t *)&s->async}, 1, close_cb);
}

/* Take the done list; with `wake`, hand each job to its waiting task. */
static void reap(sdb_t *s, int wake) {
  sjob_t *j, *next;
  uv_mutex_lock(&s->mu);
  j = s->dhead;
  s->dhead = s->dtail = NULL;
  uv_mutex_unlock(&s->mu);
  for (; j; j = next) {
    next = j->next;
    job_done(s);
    if (j->t && wake) task_wake_undo(s->rt, j->t, 0, job_undo);
    else job_free(j);
  }
}

/* The thread has ended: join it, wake db:close() waiters, close the handle. */
static void finish(sdb_t *s) {
  uv_thread_join(&s->thread);
  s->joined = 1;
  s->rt->mem_used -= s->reserved; /* the connection is gone with its thread */
  s->reserved = 0;
  tlist_wake_all(s->rt, &s->closers);
  close_async(s);
}

static void async_cb(uv_async_t *h) {
  sdb_t *s = (sdb_t *)h->data;
  int exited;
  reap(s, 1);
  uv_mutex_lock(&s->mu);
  exited = s->exited;
  uv_mutex_unlock(&s->mu);
  if (exited && !s->joined) finish(s);
}

/* Wake t with a "closed" error (its job is no longer its own). */
static void wake_closed(sdb_t *s, task_t *t) {
  task_wake_err(s->rt, t, "closed", NULL, "database is closed");
}

/* Stop taking jobs: queued ones fail with "closed", a running one is
** interrupted and its task told "closed" at once; the thread then closes
** the database and exits. Waiters are woken only when `wake`. */
static void shutdown_db(sdb_t *s, int wake) {
  sjob_t *j, *next;
  task_t *t;
  if (s->closed) return;
  s->closed = 1;
  uv_ref((uv_handle_t *)&s->async); /* until the thread has said goodbye */
  uv_mutex_lock(&s->mu);
  j = s->qhead;
  s->qhead = s->qtail = NULL;
  if (s->running && s->running->t) {
    if (wake) wake_closed(s, s->running->t);
    s->running->t = NULL;
    sqlx_interrupt(s->conn, &s->running->r);
  }
  s->stop = 1;
  uv_cond_signal(&s->cv);
  uv_mutex_unlock(&s->mu);
  for (; j; j = next) {
    next = j->next;
    if (j->t && wake) wake_closed(s, j->t);
    job_free(j);
    job_done(s);
  }
  while (wake && (t = tlist_pop(&s->tx_waiters)) != NULL) wake_closed(s, t);
}

/* End the thread here and now: when the runtime is being freed (its loop
** may not run for us again), or when the thread is known to be idle. */
static void shutdown_now(sdb_t *s) {
  shutdown_db(s, 0);
  if (!s->joined) {
    uv_thread_join(&s->thread);
    s->joined = 1;
    reap(s, 0);
    close_async(s);
  }
}

/* ---- the Db object ---- */

static dbbox_t *check_box(lua_State *L) {
  return (dbbox_t *)udata_check(L, 1, DB_MT);
}

/* The open connection of the Db at 1; raises "closed" when it is not. */
static sdb_t *check_db(lua_State *L) {
  dbbox_t *b = check_box(L);
  if (!b->s || b->s->closed)
    err_raise(L, "closed", NULL, "database is closed");
  return b->s;
}

/* __gc: close without waiting (or, when the runtime is going, at once). */
static int db_gc(lua_State *L) {
  sdb_t *s = (sdb_t *)hbox_take(L, 1);
  if (!s) return 0;
  if (s->rt->closing) shutdown_now(s);
  else shutdown_db(s, 0);
  if (hlife_unbox(&s->life)) sdb_free(s);
  return 0;
}

/* db:close(): fail pending queries with "closed", then wait (shielded:
** it is cleanup, and quick) until the database file is closed. */
static int db_close(lua_State *L) {
  dbbox_t *b = check_box(L);
  sdb_t *s = b->s;
  task_t *t;
  if (!s) return 0;
  shutdown_db(s, 1);
  /* outside a task, or in a __close that cannot yield: do not wait */
  if (s->joined || !(t = task_current(L)) || !task_can_wait(L)) return 0;
  lua_settop(L, 1);
  tlist_push(&s->closers, t);
  t->flags |= TF_SHIELD;
  return task_wait(L, t, tlist_cancel, s, "db:close", 0, NULL);
}

static int db_tostring(lua_State *L) {
  dbbox_t *b = check_box(L);
  lua_pushfstring(L, "Db (%s%s)", b->s ? b->s->path : "?",
                  b->s && !b->s->closed ? "" : ", closed");
  return 1;
}

/* ---- parameters (Lua -> job) ---- */

/* Put one parameter value; returns 0, or -1 for a value that cannot bind. */
static int put_param(lua_State *L, vbuf_t *b, int idx) {
  size_t n;
  const char *p;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: vbuf_put_tag(b, VT_NIL); return 0;
  case LUA_TBOOLEAN:
    vbuf_put_tag(b, lua_toboolean(L, idx) ? VT_TRUE : VT_FALSE);
    return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) vbuf_put_int(b, lua_tointeger(L, idx));
    else vbuf_put_flt(b, lua_tonumber(L, idx));
    return 0;
  case LUA_TSTRING:
    p = lua_tolstring(L, idx, &n);
    vbuf_put_str(b, VT_STR, p, n);
    return 0;
  case LUA_TUSERDATA: /* sqlite.blob(s) */
    if (!luaL_testudata(L, idx, BLOB_MT)) return -1;
    lua_getiuservalue(L, idx, 1);
    p = lua_tolstring(L, -1, &n);
    vbuf_put_str(b, VT_BLOB, p, n);
    lua_pop(L, 1);
    return 0;
  default: return -1;
  }
}

/* [db, sql, params...] -> j->r.params. One table argument binds by name
** (and by position for ? parameters); otherwise the arguments bind by
** position. Run under lua_pcall (see db_call). */
static int put_params(lua_State *L) {
  sjob_t *j = (sjob_t *)lua_touserdata(L, -1);
  vbuf_t *b = &j->r.params;
  int i, n;
  lua_pop(L, 1);
  n = lua_gettop(L) - 2;
  if (n == 1 && lua_type(L, 3) == LUA_TTABLE) {
    j->r.flags |= SQ_NAMED;
    n = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) n++, lua_pop(L, 1);
    vbuf_put_uint(b, (uint64_t)n);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (!lua_isinteger(L, -2) && lua_type(L, -2) != LUA_TSTRING)
        return err_raise(L, "value", NULL, "parameter keys must be names or "
                         "positions, got a %s", luaL_typename(L, -2));
      put_param(L, b, lua_gettop(L) - 1);
      if (put_param(L, b, lua_gettop(L))) {
        const char *type = luaL_typename(L, -1);
        return err_raise(L, "value", NULL, "parameter %s: cannot bind a %s value",
                         luaL_tolstring(L, -2, NULL), type);
      }
      lua_pop(L, 1);
    }
  } else {
    vbuf_put_uint(b, (uint64_t)n);
    for (i = 1; i <= n; i++) {
      vbuf_put_int(b, i);
      if (put_param(L, b, i + 2))
        return err_raise(L, "value", NULL, "parameter #%d: cannot bind a %s value",
                         i, luaL_typename(L, i + 2));
    }
  }
  if (b->oom) return luaL_error(L, "not enough memory");
  return 0;
}

/* ---- results (job -> Lua) ---- */

/* Rows: a table per row keyed by column name (NULL columns are absent).
** Column names at base+1 .. base+ncols. */
static void push_rows(lua_State *L, sqlreq_t *r) {
  const char *pos = r->out.p, *end = pos + r->out.len;
  uint64_t ncols = 0, i;
  int64_t row;
  int base = lua_gettop(L);
  if (vbuf_get_uint(&pos, end, &ncols) || ncols > (uint64_t)(end - pos))
    luaL_error(L, "internal error: malformed rows");
  luaL_checkstack(L, (int)ncols + 4, "too many columns");
  for (i = 0; i < ncols; i++) vbuf_decode(L, &pos, end);
  if (r->op == SQ_QUERY) lua_createtable(L, (int)r->nrows, 0);
  for (row = 1; row <= r->nrows; row++) {
    lua_createtable(L, 0, (int)ncols);
    for (i = 1; i <= ncols; i++) {
      lua_pushvalue(L, base + (int)i);
      vbuf_decode(L, &pos, end);
      if (lua_isnil(L, -1)) lua_pop(L, 2);
      else lua_rawset(L, -3);
    }
    if (r->op == SQ_QUERY) lua_rawseti(L, -2, row);
  }
  if (r->op == SQ_FIRST && r->nrows == 0) lua_pushnil(L);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

/* [job] -> what the job's method returns, or its error object. */
static int push_outcome(lua_State *L) {
  sjob_t *j = (sjob_t *)lua_touserdata(L, 1);
  sqlreq_t *r = &j->r;
  lua_settop(L, 0);
  if (r->rc != 0) {
    err_push(L, "sqlite", sqlx_code_name(r->rc), "%s", r->errmsg);
    return 1;
  }
  switch (r->op) {
  case SQ_QUERY: case SQ_FIRST: push_rows(L, r); return 1;
  case SQ_EXECUTE:
    lua_pushinteger(L, (lua_Integer)r->changes);
    lua_pushinteger(L, (lua_Integer)r->last_id);
    return 2;
  default: return 0;
  }
}

/* Turn the job of t (woken with values) into results at the top of L and
** free it. Returns the number of results; raises the job's error. */
static int take_outcome(lua_State *L, sjob_t *j) {
  int top = lua_gettop(L), st, failed;
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, j);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  failed = j->r.rc != 0;
  job_free(j);
  if (st != LUA_OK || failed) return rt_raise(L, st);
  return lua_gettop(L) - top;
}

static int call_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  (void)status; (void)ctx;
  task_resumed(L, t); /* interrupted or closed: the job is not ours */
  lua_settop(L, 1);
  return take_outcome(L, (sjob_t *)t->wdata);
}

/* Submit op with the SQL at 2 and the parameters after it, and wait. */
static int db_call(lua_State *L, int op, const char *what) {
  sdb_t *s = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  task_t *t = task_check_current(L, what);
  sjob_t *j;
  task_check_wait(L, what); /* the thread may run the statement at once */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (!(j = job_new(s, op, sql, len))) return luaL_error(L, "not enough memory");
  if (op != SQ_EXEC) {
    int i, top = lua_gettop(L);
    lua_pushcfunction(L, put_params);
    for (i = 1; i <= top; i++) lua_pushvalue(L, i);
    lua_pushlightuserdata(L, j);
    if (lua_pcall(L, top + 1, 0, 0) != LUA_OK) {
      job_free(j);
      return lua_error(L);
    }
  }
  j->t = t;
  submit(s, j);
  lua_settop(L, 1); /* the Db stays reachable while we wait */
  return task_wait(L, t, job_cancel, j, what, 0, call_k);
}

/* db:exec(sql): one or more statements, no parameters, no results. */
static int db_exec(lua_State *L) {
  if (lua_gettop(L) > 2)
    return luaL_argerror(L, 3, "db:exec takes no parameters (use db:execute)");
  return db_call(L, SQ_EXEC, "db:exec");
}

/* db:query(sql, ...) -> array of rows */
static int db_query(lua_State *L) { return db_call(L, SQ_QUERY, "db:query"); }

/* db:first(sql, ...) -> the first row, or nil */
static int db_first(lua_State *L) { return db_call(L, SQ_FIRST, "db:first"); }

/* db:execute(sql, ...) -> changes, last_insert_id */
static int db_execute(lua_State *L) { return db_call(L, SQ_EXECUTE, "db:execute"); }

/* ---- transactions ---- */

/* Where tx_k goes on. */
enum { TX_WAIT = 1, TX_BEGIN, TX_BODY, TX_COMMIT, TX_ROLLBACK };

static int tx_k(lua_State *L, int status, lua_KContext ctx);
static int tx_abandon(lua_State *L, sdb_t *s, sjob_t *j);

/* Run one statement of the transaction machinery and wait for it. BEGIN,
** COMMIT and ROLLBACK are shielded from interrupts: a cancel or timeout
** that lands while one runs is raised after it, so the transaction is
** never left open, nor reported failed when it committed. */
static int tx_submit(lua_State *L, task_t *t, sjob_t *j, lua_KContext ctx) {
  if (ctx != TX_BEGIN && !task_can_wait(L)) return tx_abandon(L, j->s, j);
  j->t = t;
  submit(j->s, j);
  t->flags |= TF_SHIELD;
  return task_wait(L, t, job_cancel, j, "db:transaction", ctx, tx_k);
}

static sjob_t *tx_job(lua_State *L, sdb_t *s, const char *sql) {
  sjob_t *j = job_new(s, SQ_EXEC, sql, strlen(sql));
  if (!j) luaL_error(L, "not enough memory");
  return j;
}

/* The outermost transaction() call of the owner ends: the next task may
** start one. */
static void tx_release(sdb_t *s) {
  if (--s->tx_depth == 0) {
    s->tx_owner = NULL;
    tlist_wake_all(s->rt, &s->tx_waiters);
  }
}

/* [db, fn, args...]: wait while another task's transaction is open, then
** BEGIN (or, nested in our own, SAVEPOINT). */
static int tx_start(lua_State *L, task_t *t, sdb_t *s) {
  char sql[48];
  sjob_t *j;
  if (s->tx_owner && s->tx_owner != t) {
    tlist_push(&s->tx_waiters, t);
    return task_wait(L, t, tlist_cancel, s, "db:transaction", TX_WAIT, tx_k);
  }
  if (s->tx_depth == 0) snprintf(sql, sizeof sql, "BEGIN IMMEDIATE");
  else snprintf(sql, sizeof sql, "SAVEPOINT loom_%d", s->tx_depth);
  j = tx_job(L, s, sql);
  s->tx_owner = t;
  s->tx_depth++;
  return tx_submit(L, t, j, TX_BEGIN);
}

/* The end of the transaction (job j) cannot be waited for: the body's
** coroutine was resumed where Lua cannot yield. Roll back without waiting
** (nobody waits for the job: reap frees it), so that the transaction is not
** left open, and raise kind usage. */
static int tx_abandon(lua_State *L, sdb_t *s, sjob_t *j) {
  char sql[80];
  int d = s->tx_depth - 1;
  job_free(j);
  if (d == 0) snprintf(sql, sizeof sql, "ROLLBACK");
  else snprintf(sql, sizeof sql, "ROLLBACK TO loom_%d; RELEASE loom_%d", d, d);
  if (!s->closed) submit(s, tx_job(L, s, sql));
  tx_release(s);
  return task_check_wait(L, "db:transaction");
}

/* The error at top ended the transaction: roll back (shielded from
** interrupts, so that a timeout cannot leave it open), then raise it. */
static int tx_fail(lua_State *L, task_t *t, sdb_t *s) {
  char sql[80];
  int d = s->tx_depth - 1;
  lua_copy(L, -1, 2);
  lua_settop(L, 2);
  if (s->closed) {
    tx_release(s);
    return lua_error(L);
  }
  if (d == 0) snprintf(sql, sizeof sql, "ROLLBACK");
  else snprintf(sql, sizeof sql, "ROLLBACK TO loom_%d; RELEASE loom_%d", d, d);
  return tx_submit(L, t, tx_job(L, s, sql), TX_ROLLBACK);
}

/* Push the error object of a failed job, and free the job. */
static void take_error(lua_State *L, sjob_t *j) {
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, j);
  lua_pcall(L, 1, 1, 0);
  job_free(j);
}

/* BEGIN or SAVEPOINT is done: call fn(...) protected, unless the task
** was interrupted meanwhile. */
static int tx_begun(lua_State *L, task_t *t, sdb_t *s) {
  sjob_t *j = (sjob_t *)t->wdata;
  int st;
  if (t->wake != WAKE_VALUES || j->r.rc != 0) {
    tx_release(s);
    task_resumed(L, t); /* closed */
    take_error(L, j);
    return lua_error(L);
  }
  job_free(j);
  if (task_push_interrupt(L, t)) return tx_fail(L, t, s);
  st = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, TX_BODY, tx_k);
  return tx_k(L, st, TX_BODY);
}

/* fn has returned (stack: db, results...) or failed: COMMIT or RELEASE. */
static int tx_body_done(lua_State *L, task_t *t, sdb_t *s, int status) {
  char sql[48];
  int d = s->tx_depth - 1;
  if (status != LUA_OK && status != LUA_YIELD) return tx_fail(L, t, s);
  if (s->closed) {
    err_push(L, "closed", NULL, "database is closed");
    return tx_fail(L, t, s);
  }
  if (d == 0) snprintf(sql, sizeof sql, "COMMIT");
  else snprintf(sql, sizeof sql, "RELEASE loom_%d", d);
  return tx_submit(L, t, tx_job(L, s, sql), TX_COMMIT);
}

/* COMMIT is done: return fn's results, or roll back if it failed. */
static int tx_committed(lua_State *L, task_t *t, sdb_t *s) {
  sjob_t *j = (sjob_t *)t->wdata;
  int wake = t->wake;
  t->wake = WAKE_VALUES;
  if (wake == WAKE_ERROR) return tx_fail(L, t, s); /* closed */
  if (j->r.rc != 0) {
    take_error(L, j);
    return tx_fail(L, t, s);
  }
  job_free(j);
  tx_release(s);
  return lua_gettop(L) - 1;
}

static int tx_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  sdb_t *s = ((dbbox_t *)lua_touserdata(L, 1))->s;
  switch (ctx) {
  case TX_WAIT:
    task_resumed(L, t);
    if (s->closed) return err_raise(L, "closed", NULL, "database is closed");
    return tx_start(L, t, s);
  case TX_BEGIN: return tx_begun(L, t, s);
  case TX_BODY: return tx_body_done(L, t, s, status);
  case TX_COMMIT: return tx_committed(L, t, s);
  default: /* TX_ROLLBACK: its outcome does not matter, the error does */
    if (t->wake == WAKE_VALUES) job_free((sjob_t *)t->wdata);
    t->wake = WAKE_VALUES;
    lua_settop(L, 2);
    tx_release(s);
    return lua_error(L);
  }
}

/* db:transaction(fn, ...) -> fn(...)'s results, committed; or rolled back
** and fn's error raised. Nested calls in the same task use savepoints;
** another task's call waits until the open transaction ends. */
static int db_transaction(lua_State *L) {
  sdb_t *s = check_db(L);
  task_t *t;
  task_check_callable(L, 2);
  t = task_check_current(L, "db:transaction");
  task_check_wait(L, "db:transaction"); /* before BEGIN: it cannot be undone */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  return tx_start(L, t, s);
}

/* ---- opening ---- */

/* Push a new Db with its connection record, thread and async handle. */
static sdb_t *db_new(lua_State *L, const char *path) {
  loom_t *rt = rt_get(L);
  dbbox_t *b = (dbbox_t *)hbox_new(L, DB_MT);
  sdb_t *s;
  if (!(s = (sdb_t *)calloc(1, sizeof *s))) luaL_error(L, "not enough memory");
  s->rt = rt;
  if (!(s->path = strdup(path)) || uv_mutex_init(&s->mu) != 0) {
    free(s->path);
    free(s);
    luaL_error(L, "not enough memory");
  }
  if (uv_cond_init(&s->cv) != 0 || uv_async_init(rt->loop, &s->async, async_cb) != 0) {
    uv_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
    luaL_error(L, "sqlite.open: cannot set up the connection");
  }
  s->async.data = s;
  uv_unref((uv_handle_t *)&s->async);
  s->life.open = 1;
  hbox_set((void **)&b->s, s, &s->life);
  if (uv_thread_create(&s->thread, thread_main, s) != 0) {
    s->closed = s->joined = 1;
    close_async(s);
    err_raise(L, "sqlite", NULL, "sqlite.open: cannot start a thread");
  }
  return s;
}

static int open_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  sdb_t *s = ((dbbox_t *)lua_touserdata(L, 1))->s;
  sjob_t *j = (sjob_t *)t->wdata;
  (void)status; (void)ctx;
  if (t->wake != WAKE_VALUES) { /* the open may still be running */
    shutdown_db(s, 0);
    task_resumed(L, t);
  }
  if (j->r.rc != 0) shutdown_now(s); /* the thread is idle: quick */
  lua_settop(L, 1);
  take_outcome(L, j);
  return 1;
}

/* Read sqlite.open's options (table at 2) into the open job. */
static void open_opts(lua_State *L, sqlreq_t *r) {
  r->busy_ms = 5000;
  r->cache_max = 100;
  if (lua_isnoneornil(L, 2)) return;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (lua_getfield(L, 2, "readonly") != LUA_TNIL && lua_toboolean(L, -1))
    r->flags |= SQ_READONLY;
  if (lua_getfield(L, 2, "create") != LUA_TNIL && !lua_toboolean(L, -1))
    r->flags |= SQ_NOCREATE;
  if (lua_getfield(L, 2, "wal") != LUA_TNIL && !lua_toboolean(L, -1))
    r->flags |= SQ_NOWAL;
  if (lua_getfield(L, 2, "busy_timeout") != LUA_TNIL) {
    double secs = luaL_checknumber(L, -1);
    r->busy_ms = secs > 0 ? (secs < 2e6 ? (int)(secs * 1000) : 2000000000) : 0;
  }
  if (lua_getfield(L, 2, "cache") != LUA_TNIL) {
    lua_Integer n = luaL_checkinteger(L, -1);
    r->cache_max = n < 0 ? 0 : n > 10000 ? 10000 : (int)n;
  }
  lua_pop(L, 5);
}

/* sqlite.open(path [, opts]) -> Db */
static int l_open(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  sqlreq_t opts;
  task_t *t;
  sdb_t *s;
  sjob_t *j;
  loom_t *rt = rt_get(L);
  size_t reserve;
  memset(&opts, 0, sizeof opts);
  open_opts(L, &opts);
  t = task_check_current(L, "sqlite.open");
  task_check_wait(L, "sqlite.open"); /* before its thread is started */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  /* a runtime with a memory_limit gives each connection a quarter of it,
  ** counted as used while it is open: SQLite's memory holds too */
  reserve = rt->mem_limit / 4;
  if (reserve && rt->mem_used + reserve > rt->mem_limit)
    return err_raise(L, "memory", NULL,
                     "sqlite.open: no room under the runtime's memory_limit "
                     "for another connection (each takes a quarter of it)");
  s = db_new(L, path);
  s->reserved = reserve;
  rt->mem_used += reserve;
  lua_replace(L, 1);
  lua_settop(L, 1);
  if (!(j = job_new(s, SQ_OPEN, s->path, strlen(s->path)))) {
    shutdown_db(s, 0);
    return luaL_error(L, "not enough memory");
  }
  j->r.flags = opts.flags;
  j->r.busy_ms = opts.busy_ms;
  j->r.cache_max = opts.cache_max;
  j->r.mem_limit = reserve;
  j->t = t;
  submit(s, j);
  return task_wait(L, t, job_cancel, j, "sqlite.open", 0, open_k);
}

/* sqlite.blob(s) -> a value that binds as a BLOB even if s is valid text */
static int l_blob(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_newuserdatauv(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, BLOB_MT);
  return 1;
}

int luaopen_loom_sqlite(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"exec", db_exec}, {"query", db_query}, {"first", db_first},
      {"execute", db_execute}, {"transaction", db_transaction},
      {"close", db_close}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"open", l_open}, {"blob", l_blob}, {NULL, NULL}};
  if (class_new(L, DB_MT, methods, db_gc)) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, db_tostring, 1);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, BLOB_MT);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  lua_pushstring(L, sqlx_version());
  lua_setfield(L, -2, "sqlite_version");
  return 1;
}
