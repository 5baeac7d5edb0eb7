/*
** pg.c -- loom.pg.core: PostgreSQL connections on libpq's asynchronous API.
**
** The connection's socket is watched by a uv_poll_t; libpq is only ever
** called in its non-blocking forms (PQconnectPoll, PQsendQueryParams,
** PQconsumeInput, PQisBusy, PQgetResult, PQgetCopyData with async=1,
** PQputCopyData and PQflush in non-blocking mode). PQcancel, the one call
** that blocks, runs on the thread pool.
**
** A connection runs one request at a time, in a FIFO: several tasks using
** one Conn queue behind each other. Only the head is sent, so a cancel
** request can only hit the query it was meant for (pipelining several
** queries would let a late cancel kill the next one). A task cancelled
** while its query runs detaches it and sends the cancel; the connection
** reads and drops that query's results before it sends the next.
**
** Results are converted here by type OID (pg_types.c); policy (pools,
** transactions, URLs, listen iterators, COPY loops) is in lib/loom/pg.lua.
*/
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "internal.h"
#include "pg.h"

static const char *CONN_MT = "loom.pg.Conn";

enum { RS_QUEUED, RS_SENT, RS_COPY_IN, RS_COPY_OUT, RS_DONE };
enum { OP_RESULT, OP_COPY_START, OP_COPY_GET, OP_COPY_FLUSH };

typedef struct pgconn pgconn_t;

typedef struct pgreq {
  struct pgreq *next;
  pgconn_t *c;
  task_t *t;     /* the waiting task; NULL while not waiting or detached */
  task_t *owner; /* the task the request belongs to; NULL once detached */
  int state, op, simple;
  int nparams;
  char *sql;
  char *pbuf;    /* parameter bytes, each at poff[i] */
  size_t *poff;
  int *plen, *pfmt;
  Oid *ptype;
  PGresult *res; /* the result to deliver: the first error, or the last */
  const char *ekind, *ecode; /* an io failure instead of a result */
  char *emsg;
  char *chunk;   /* OP_COPY_GET: a row of COPY data (PQfreemem) */
  int chunklen;
} pgreq_t;

typedef struct pgnote {
  struct pgnote *next;
  PGnotify *n;
} pgnote_t;

struct pgconn {
  loom_t *rt;
  PGconn *pg;
  uv_poll_t *poll;  /* NULL when none; freed in its close callback */
  int sock, events;
  pgreq_t *head, *tail;
  task_t *connector; /* the task in pg.connect */
  pgnote_t *nhead, *ntail;
  task_t *nwaiter;   /* the task waiting for a notification */
  pgreq_t *held;     /* finished while its owner was not waiting */
  int connecting, broken, closed, boxed, polls;
  char *emsg;        /* why the connection broke */
};

typedef struct connbox {
  pgconn_t *c;
} connbox_t;

typedef struct cancel_work {
  uv_work_t w;
  PGcancel *cc;
} cancel_work_t;

static void progress(pgconn_t *c);

/* ---- requests ---- */

static void req_free(pgreq_t *r) {
  if (r->res) PQclear(r->res);
  if (r->chunk) PQfreemem(r->chunk);
  free(r->sql);
  free(r->pbuf);
  free(r->poff);
  free(r->emsg);
  free(r);
}

static void conn_maybe_free(pgconn_t *c) {
  if (!c->boxed && c->polls == 0 && c->closed) {
    free(c->emsg);
    free(c);
  }
}

/* ---- the socket watch ---- */

static void poll_close_cb(uv_handle_t *h) {
  pgconn_t *c = (pgconn_t *)h->data;
  free(h);
  c->polls--;
  conn_maybe_free(c);
}

static void poll_drop(pgconn_t *c) {
  if (!c->poll) return;
  uv_poll_stop(c->poll);
  uv_close((uv_handle_t *)c->poll, poll_close_cb);
  c->poll = NULL;
  c->events = 0;
}

/* Keep the loop alive only while a task waits on the connection. */
static void poll_ref(pgconn_t *c) {
  if (!c->poll) return;
  if (c->head || c->connector || c->nwaiter) uv_ref((uv_handle_t *)c->poll);
  else uv_unref((uv_handle_t *)c->poll);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  pgconn_t *c = (pgconn_t *)h->data;
  (void)status; (void)events;
  progress(c);
}

/* Watch libpq's current socket for events (it may change while
** connecting). Returns 0 or a UV_* error. */
static int poll_watch(pgconn_t *c, int events) {
  int fd = PQsocket(c->pg), rc;
  if (c->poll && fd != c->sock) poll_drop(c);
  if (fd < 0) return UV_EBADF;
  if (!c->poll) {
    uv_poll_t *p = (uv_poll_t *)malloc(sizeof *p);
    if (!p) return UV_ENOMEM;
    if ((rc = uv_poll_init(c->rt->loop, p, fd)) != 0) {
      free(p);
      return rc;
    }
    p->data = c;
    c->poll = p;
    c->sock = fd;
    c->polls++;
    c->events = 0;
  }
  if (events != c->events) {
    if ((rc = uv_poll_start(c->poll, events, poll_cb)) != 0) return rc;
    c->events = events;
  }
  poll_ref(c);
  return 0;
}

/* ---- waking tasks ---- */

static void push_io_error(lua_State *L, const char *kind, const char *code,
                          const char *msg) {
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
  err_push(L, kind, code, "");
  lua_pushlstring(L, msg, n);
  lua_setfield(L, -2, "message");
}

/* The task that owned r no longer wants it, or its wake lost a race. */
static void req_detach(pgreq_t *r);

static void req_undo(task_t *t) { req_detach((pgreq_t *)t->wdata); }

/* Hand r's outcome to its waiting task (r stays with the task). */
static void req_wake(pgreq_t *r) {
  task_t *t = r->t;
  r->t = NULL;
  task_wake_undo(r->c->rt, t, 0, req_undo);
}

/* r is done: take it off the FIFO, hand it over or free it. */
static void req_finish(pgconn_t *c, pgreq_t *r) {
  c->head = r->next;
  if (!c->head) c->tail = NULL;
  r->next = NULL;
  r->state = RS_DONE;
  if (r->t) req_wake(r);
  else if (!r->owner) req_free(r);
  else c->held = r; /* the owner takes the outcome on its next call */
}

/* The owner takes r's outcome. */
static pgreq_t *req_take(pgconn_t *c, pgreq_t *r) {
  if (c->held == r) c->held = NULL;
  return r;
}

/* The connection broke: every request fails with kind io; a request never
** sent says so (code ENOTCONN), so that a pool may send it elsewhere. */
static void conn_fail(pgconn_t *c, const char *msg) {
  pgreq_t *r;
  if (!c->broken) {
    c->broken = 1;
    if (!c->emsg) c->emsg = strdup(msg && *msg ? msg : "connection lost");
  }
  poll_drop(c);
  while ((r = c->head) != NULL) {
    r->ekind = c->closed ? "closed" : "io";
    r->ecode = r->state == RS_QUEUED ? "ENOTCONN" : "ECONNRESET";
    if (!r->emsg) r->emsg = strdup(c->closed ? "connection is closed" :
                                   c->emsg ? c->emsg : "connection lost");
    if (r->res) {
      PQclear(r->res);
      r->res = NULL;
    }
    req_finish(c, r);
  }
  if (c->nwaiter) {
    task_t *t = c->nwaiter;
    c->nwaiter = NULL;
    if (c->closed) err_push(t->co, "closed", NULL, "connection is closed");
    else push_io_error(t->co, "io", "ECONNRESET", c->emsg ? c->emsg : "");
    task_wake_error(c->rt, t);
  }
}

/* ---- sending ---- */

/* Send the head request. */
static void send_head(pgconn_t *c) {
  pgreq_t *r = c->head;
  const char *vals[r->nparams > 0 ? r->nparams : 1];
  int i, ok, fl;
  for (i = 0; i < r->nparams; i++)
    vals[i] = r->plen[i] < 0 ? NULL : r->pbuf + r->poff[i];
  if (r->simple) ok = PQsendQuery(c->pg, r->sql);
  else ok = PQsendQueryParams(c->pg, r->sql, r->nparams, r->ptype, vals,
                              r->plen, r->pfmt, 0);
  if (!ok) {
    if (PQstatus(c->pg) == CONNECTION_BAD) {
      conn_fail(c, PQerrorMessage(c->pg));
      return;
    }
    r->ekind = "pg";
    r->ecode = NULL;
    r->emsg = strdup(PQerrorMessage(c->pg));
    req_finish(c, r);
    return;
  }
  r->state = RS_SENT;
  fl = PQflush(c->pg);
  if (fl < 0) conn_fail(c, PQerrorMessage(c->pg));
  else if (poll_watch(c, UV_READABLE | (fl ? UV_WRITABLE : 0)) != 0)
    conn_fail(c, "cannot watch the connection's socket");
}

/* Run PQcancel off the loop: it connects to the server and waits. */
static void cancel_work_cb(uv_work_t *w) {
  cancel_work_t *cw = (cancel_work_t *)w->data;
  char err[256];
  PQcancel(cw->cc, err, sizeof err);
}

static void cancel_after_cb(uv_work_t *w, int status) {
  cancel_work_t *cw = (cancel_work_t *)w->data;
  (void)status;
  PQfreeCancel(cw->cc);
  free(cw);
}

/* Ask the server to cancel what the connection runs now. */
static void send_cancel(pgconn_t *c) {
  cancel_work_t *cw = (cancel_work_t *)calloc(1, sizeof *cw);
  if (!cw) return;
  if (!(cw->cc = PQgetCancel(c->pg))) {
    free(cw);
    return;
  }
  cw->w.data = cw;
  if (uv_queue_work(c->rt->loop, &cw->w, cancel_work_cb, cancel_after_cb) != 0) {
    PQfreeCancel(cw->cc);
    free(cw);
  }
}

/* Nobody wants r any more: drop it if queued, else let it run out (a
** running query is cancelled, a COPY IN ended with an error) and drop its
** results. */
static void req_detach(pgreq_t *r) {
  pgconn_t *c = r->c;
  pgreq_t **p;
  r->t = NULL;
  r->owner = NULL;
  if (r->state == RS_DONE) {
    req_free(req_take(c, r));
    return;
  }
  if (r->state == RS_QUEUED) {
    pgreq_t *prev = NULL;
    for (p = &c->head; *p; prev = *p, p = &(*p)->next)
      if (*p == r) {
        *p = r->next;
        if (c->tail == r) c->tail = prev;
        break;
      }
    req_free(r);
    return;
  }
  if (c->broken || c->closed) return;
  if (r->state == RS_COPY_IN) {
    PQputCopyEnd(c->pg, "cancelled");
    r->state = RS_SENT;
    PQflush(c->pg);
  } else {
    send_cancel(c);
  }
  progress(c);
}

static void req_cancel(task_t *t) { req_detach((pgreq_t *)t->wdata); }

/* ---- reading ---- */

/* Keep a result of the head: the first error wins, else the last. */
static void keep_result(pgreq_t *r, PGresult *res) {
  ExecStatusType st = PQresultStatus(res);
  int err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
  if (r->res && PQresultStatus(r->res) == PGRES_FATAL_ERROR) {
    PQclear(res);
    return;
  }
  if (r->res && !err && st == PGRES_COMMAND_OK &&
      PQresultStatus(r->res) == PGRES_TUPLES_OK && !r->simple) {
    PQclear(res);
    return;
  }
  if (r->res) PQclear(r->res);
  r->res = res;
}

/* COPY OUT rows for a detached request, or one for the waiting task.
** Returns 1 when the copy has ended (results follow), 0 to wait. */
static int copy_out_step(pgconn_t *c, pgreq_t *r) {
  for (;;) {
    char *buf = NULL;
    int n;
    if (r->owner && !r->t) return 0; /* the owner is not asking yet */
    n = PQgetCopyData(c->pg, &buf, 1);
    if (n == 0) return 0;
    if (n < 0) {
      r->state = RS_SENT;
      return 1;
    }
    if (r->t) {
      r->chunk = buf;
      r->chunklen = n;
      req_wake(r);
      return 0;
    }
    PQfreemem(buf);
  }
}

/* Read what the head's results and deliver them. Returns 1 when the
** head finished (the next may be sent), 0 to wait for more input. */
static int head_step(pgconn_t *c, pgreq_t *r) {
  for (;;) {
    PGresult *res;
    ExecStatusType st;
    if (r->state == RS_COPY_OUT && !copy_out_step(c, r)) return 0;
    if (r->state == RS_COPY_IN) return 0;
    if (PQisBusy(c->pg)) return 0;
    if (!(res = PQgetResult(c->pg))) {
      req_finish(c, r);
      return 1;
    }
    st = PQresultStatus(res);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
      PQclear(res);
      r->state = st == PGRES_COPY_IN ? RS_COPY_IN : RS_COPY_OUT;
      if (!r->owner) { /* detached before the copy began */
        if (st == PGRES_COPY_IN) {
          PQputCopyEnd(c->pg, "cancelled");
          PQflush(c->pg);
          r->state = RS_SENT;
        }
        continue;
      }
      if (r->t && r->op == OP_COPY_START) {
        req_wake(r);
        if (st == PGRES_COPY_IN) return 0;
      }
      continue;
    }
    keep_result(r, res);
  }
}

/* Queue the notifications libpq has read; wake the task waiting for one. */
static void take_notifies(pgconn_t *c) {
  PGnotify *n;
  while ((n = PQnotifies(c->pg)) != NULL) {
    pgnote_t *e = (pgnote_t *)malloc(sizeof *e);
    if (!e) {
      PQfreemem(n);
      continue;
    }
    e->n = n;
    e->next = NULL;
    if (c->ntail) c->ntail->next = e;
    else c->nhead = e;
    c->ntail = e;
  }
  if (c->nhead && c->nwaiter) {
    task_t *t = c->nwaiter;
    c->nwaiter = NULL;
    task_wake(c->rt, t, 0);
  }
}

static void connect_step(pgconn_t *c);

/* The socket is ready (or something changed): read, write, move on. */
static void progress(pgconn_t *c) {
  int fl;
  if (c->closed || c->broken) return;
  if (c->connecting) {
    connect_step(c);
    return;
  }
  if (!PQconsumeInput(c->pg)) {
    conn_fail(c, PQerrorMessage(c->pg));
    return;
  }
  if ((fl = PQflush(c->pg)) < 0) {
    conn_fail(c, PQerrorMessage(c->pg));
    return;
  }
  take_notifies(c);
  while (c->head && !c->broken) {
    if (c->head->state == RS_QUEUED) send_head(c);
    else if (!head_step(c, c->head)) break;
  }
  if (c->broken) return;
  take_notifies(c);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    conn_fail(c, PQerrorMessage(c->pg));
    return;
  }
  fl = PQflush(c->pg);
  if (fl < 0) conn_fail(c, PQerrorMessage(c->pg));
  else if (poll_watch(c, UV_READABLE | (fl ? UV_WRITABLE : 0)) != 0)
    conn_fail(c, "cannot watch the connection's socket");
  else if (c->head && c->head->t && c->head->op == OP_COPY_FLUSH && !fl)
    req_wake(c->head);
}

/* ---- connecting ---- */

/* Server notices (NOTICE, WARNING) are not errors: libpq's default prints
** them to stderr, which a server program does not want. */
static void notice_drop(void *arg, const char *msg) {
  (void)arg; (void)msg;
}

/* One step of PQconnectPoll; wakes the connecting task when done. */
static void connect_step(pgconn_t *c) {
  PostgresPollingStatusType st = PQconnectPoll(c->pg);
  task_t *t = c->connector;
  int rc = 0;
  if (st == PGRES_POLLING_READING) rc = poll_watch(c, UV_READABLE);
  else if (st == PGRES_POLLING_WRITING) rc = poll_watch(c, UV_WRITABLE);
  if (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
    if (rc == 0) return;
    st = PGRES_POLLING_FAILED;
  }
  c->connecting = 0;
  c->connector = NULL;
  if (st == PGRES_POLLING_OK && PQsetnonblocking(c->pg, 1) == 0 &&
      poll_watch(c, UV_READABLE) == 0) {
    if (t) task_wake(c->rt, t, 0);
    return;
  }
  conn_fail(c, rc ? "cannot watch the connection's socket" : PQerrorMessage(c->pg));
  if (t) {
    push_io_error(t->co, "io", "ECONNREFUSED", c->emsg);
    task_wake_error(c->rt, t);
  }
}

/* ---- the Conn object ---- */

static connbox_t *check_box(lua_State *L) {
  return (connbox_t *)udata_check(L, 1, CONN_MT);
}

/* The usable connection at 1; raises closed or io. */
static pgconn_t *check_conn(lua_State *L) {
  connbox_t *b = check_box(L);
  pgconn_t *c = b->c;
  if (!c || c->closed) err_raise(L, "closed", NULL, "connection is closed");
  if (c->broken) {
    const char *m = c->emsg ? c->emsg : "connection lost";
    push_io_error(L, "io", "ENOTCONN", m);
    lua_error(L);
  }
  return c;
}

/* Close: fail every request and waiter with closed, release libpq. */
static void conn_close(pgconn_t *c) {
  pgnote_t *e, *next;
  if (c->closed) return;
  c->closed = 1;
  if (c->connector) {
    task_t *t = c->connector;
    c->connector = NULL;
    if (!c->rt->closing) {
      err_push(t->co, "closed", NULL, "connection is closed");
      task_wake_error(c->rt, t);
    }
  }
  if (c->rt->closing) { /* no task may be woken now */
    pgreq_t *r, *rn;
    for (r = c->head; r; r = rn) { /* no task waits any more */
      rn = r->next;
      req_free(r);
    }
    c->head = c->tail = NULL;
    c->nwaiter = NULL;
    poll_drop(c);
  } else {
    c->broken = 0;
    conn_fail(c, "connection is closed");
  }
  for (e = c->nhead; e; e = next) {
    next = e->next;
    PQfreemem(e->n);
    free(e);
  }
  c->nhead = c->ntail = NULL;
  if (c->held) req_free(req_take(c, c->held));
  if (c->pg) PQfinish(c->pg);
  c->pg = NULL;
}

static int conn_gc(lua_State *L) {
  connbox_t *b = (connbox_t *)lua_touserdata(L, 1);
  pgconn_t *c = b->c;
  if (!c) return 0;
  b->c = NULL;
  c->boxed = 0;
  conn_close(c);
  conn_maybe_free(c);
  return 0;
}

/* c:close() */
static int conn_close_l(lua_State *L) {
  connbox_t *b = check_box(L);
  if (b->c) conn_close(b->c);
  return 0;
}

/* c:status() -> "ok", "broken" or "closed" */
static int conn_status(lua_State *L) {
  connbox_t *b = check_box(L);
  pgconn_t *c = b->c;
  lua_pushstring(L, !c || c->closed ? "closed" : c->broken ? "broken" : "ok");
  return 1;
}

/* c:parameter(name) -> the server's setting as reported, or nil */
static int conn_parameter(lua_State *L) {
  pgconn_t *c = check_conn(L);
  const char *v = PQparameterStatus(c->pg, luaL_checkstring(L, 2));
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  return 1;
}

/* c:backend_pid() -> the server process's id (pg_backend_pid()) */
static int conn_pid(lua_State *L) {
  lua_pushinteger(L, PQbackendPID(check_conn(L)->pg));
  return 1;
}

/* c:idle() -> true when no request is queued or running */
static int conn_idle(lua_State *L) {
  connbox_t *b = check_box(L);
  lua_pushboolean(L, b->c && !b->c->head);
  return 1;
}

static int conn_tostring(lua_State *L) {
  connbox_t *b = check_box(L);
  pgconn_t *c = b->c;
  lua_pushfstring(L, "pg.Conn (%s)", !c || c->closed ? "closed" :
                  c->broken ? "broken" : "open");
  return 1;
}

/* ---- queries ---- */

/* [conn, sql, params...] -> a request queued on the connection. */
static pgreq_t *req_new(lua_State *L, pgconn_t *c, int simple) {
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  pgreq_t *r = (pgreq_t *)calloc(1, sizeof *r);
  if (!r || !(r->sql = (char *)malloc(len + 1))) {
    free(r);
    luaL_error(L, "not enough memory");
  }
  if (memchr(sql, '\0', len)) {
    req_free(r);
    luaL_argerror(L, 2, "SQL text contains a NUL byte");
  }
  memcpy(r->sql, sql, len + 1);
  r->c = c;
  r->simple = simple;
  if (!simple && pgp_params(L, 3, lua_gettop(L), r->nparams = lua_gettop(L) - 2,
                            &r->pbuf, &r->poff, &r->plen, &r->pfmt, &r->ptype)) {
    req_free(r);
    lua_error(L);
  }
  return r;
}

static void req_enqueue(pgconn_t *c, pgreq_t *r) {
  r->state = RS_QUEUED;
  if (c->tail) c->tail->next = r;
  else c->head = r;
  c->tail = r;
  if (c->head == r) progress(c);
  else poll_ref(c);
}

/* Raise r's failure, or return 0 if it has none (r is freed on raise). */
static int req_raise(lua_State *L, pgreq_t *r) {
  if (r->ekind) {
    push_io_error(L, r->ekind, r->ecode, r->emsg ? r->emsg : "");
    req_free(r);
    return lua_error(L);
  }
  if (r->res && (PQresultStatus(r->res) == PGRES_FATAL_ERROR ||
                 PQresultStatus(r->res) == PGRES_BAD_RESPONSE)) {
    pgp_push_error(L, r->res);
    req_free(r);
    return lua_error(L);
  }
  return 0;
}

/* [req] -> rows, command tag, affected rows (under pcall: may fail). */
static int push_outcome(lua_State *L) {
  pgreq_t *r = (pgreq_t *)lua_touserdata(L, 1);
  lua_settop(L, 0);
  return pgp_push_result(L, r->res);
}

/* Results of a finished request at the top of L; frees it. */
static int take_outcome(lua_State *L, pgreq_t *r) {
  int top = lua_gettop(L), st;
  req_raise(L, r);
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, r);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  req_free(r);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L) - top;
}

static int query_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  (void)status; (void)ctx;
  task_resumed(L, t);
  lua_settop(L, 1);
  return take_outcome(L, (pgreq_t *)t->wdata);
}

static int do_query(lua_State *L, int simple, const char *what, int shield) {
  pgconn_t *c = check_conn(L);
  task_t *t = task_check_current(L, what);
  pgreq_t *r;
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (c->held) return luaL_error(L, "a COPY of this task is still open");
  r = req_new(L, c, simple);
  r->owner = t;
  r->op = OP_RESULT;
  req_enqueue(c, r);
  lua_settop(L, 1);
  if (r->state == RS_DONE) return take_outcome(L, req_take(c, r));
  r->t = t;
  if (shield) t->flags |= TF_SHIELD;
  return task_wait(L, t, req_cancel, r, what, 0, query_k);
}

/* c:query(sql, ...) -> rows, command tag, rows affected */
static int conn_query(lua_State *L) { return do_query(L, 0, "pg query", 0); }

/* c:exec(sql) -> rows, tag, affected of the last statement (several
** statements, no parameters: the simple query protocol) */
static int conn_exec(lua_State *L) {
  if (lua_gettop(L) > 2) return luaL_argerror(L, 3, "exec takes no parameters");
  return do_query(L, 1, "pg exec", 0);
}

/* c:_exec_shielded(sql): c:exec that a cancel or timeout does not
** interrupt (COMMIT, ROLLBACK: a transaction must not be left open); an
** interruption is raised once it is done. */
static int conn_exec_shielded(lua_State *L) {
  lua_settop(L, 2);
  return do_query(L, 1, "pg exec", 1);
}

/* ---- COPY ----
** While a task copies, its request stays at the head of the FIFO between
** its calls (r->owner set, r->t NULL); if the copy ends or the connection
** breaks meanwhile, the request waits in c->held for the owner's next
** call. */

/* The copy the current task has open on c. A copy that ended while the
** owner was away raises its outcome (or "ended"). */
static pgreq_t *copy_req(lua_State *L, pgconn_t *c, task_t *t) {
  pgreq_t *r = c->head;
  if (c->held && c->held->owner == t) {
    r = req_take(c, c->held);
    req_raise(L, r);
    req_free(r);
    luaL_error(L, "the COPY has ended");
  }
  check_conn(L);
  if (!r || r->owner != t || (r->state != RS_COPY_IN && r->state != RS_COPY_OUT))
    luaL_error(L, "no COPY in progress on this connection for this task");
  return r;
}

/* r is in COPY mode or done: "in"/"out", or raise its outcome. */
static int copy_started(lua_State *L, pgconn_t *c, pgreq_t *r) {
  if (r->state == RS_DONE) { /* not a COPY after all, or it failed */
    req_take(c, r);
    req_raise(L, r);
    req_free(r);
    return luaL_error(L, "the statement did not start a COPY");
  }
  lua_pushstring(L, r->state == RS_COPY_IN ? "in" : "out");
  return 1;
}

static int copy_start_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  pgreq_t *r = (pgreq_t *)t->wdata;
  (void)status; (void)ctx;
  task_resumed(L, t);
  return copy_started(L, r->c, r);
}

/* c:copy_start(sql) -> "in" or "out", once the server is in COPY mode */
static int conn_copy_start(lua_State *L) {
  pgconn_t *c = check_conn(L);
  task_t *t = task_check_current(L, "pg copy");
  pgreq_t *r;
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (c->held) return luaL_error(L, "a COPY of this task is still open");
  lua_settop(L, 2);
  r = req_new(L, c, 0);
  r->owner = t;
  r->op = OP_COPY_START;
  req_enqueue(c, r);
  if (r->state != RS_QUEUED && r->state != RS_SENT) return copy_started(L, c, r);
  r->t = t;
  return task_wait(L, t, req_cancel, r, "pg copy", 0, copy_start_k);
}

static int copy_finish(lua_State *L, pgconn_t *c, task_t *t, pgreq_t *r,
                       const char *what);

/* Hand data at 2 to libpq and start sending it; does not wait for the
** socket (the next call does, if it is still behind). */
static int copy_put_now(lua_State *L, pgconn_t *c, task_t *t, pgreq_t *r) {
  size_t n;
  const char *data = lua_tolstring(L, 2, &n);
  int fl;
  while (n > 0) {
    int k = n > 0x40000000 ? 0x40000000 : (int)n;
    if (PQputCopyData(c->pg, data, k) != 1) break;
    data += k;
    n -= (size_t)k;
  }
  if (n > 0 && PQstatus(c->pg) == CONNECTION_OK) {
    /* the server ended the COPY (a bad row): its error is the result */
    r->state = RS_SENT;
    lua_settop(L, 1);
    return copy_finish(L, c, t, r, "pg copy_put");
  }
  fl = n > 0 ? -1 : PQflush(c->pg);
  if (fl < 0) {
    conn_fail(c, PQerrorMessage(c->pg));
    return copy_req(L, c, t), 0;
  }
  if (fl && poll_watch(c, UV_READABLE | UV_WRITABLE) != 0) {
    conn_fail(c, "cannot watch the connection's socket");
    return copy_req(L, c, t), 0;
  }
  return 0;
}

static int copy_put_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  pgreq_t *r = (pgreq_t *)t->wdata;
  (void)status; (void)ctx;
  task_resumed(L, t);
  return copy_put_now(L, r->c, t, copy_req(L, r->c, t));
}

/* c:copy_put(data): send COPY IN data. At most one call's data waits in
** libpq's buffer: while the previous is still being sent, this waits for
** the socket first (the caller makes its next chunk meanwhile). */
static int conn_copy_put(lua_State *L) {
  pgconn_t *c = ((connbox_t *)check_box(L))->c;
  task_t *t = task_check_current(L, "pg copy_put");
  pgreq_t *r;
  int fl;
  luaL_checkstring(L, 2);
  if (!c) return err_raise(L, "closed", NULL, "connection is closed");
  r = copy_req(L, c, t);
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (r->state != RS_COPY_IN) return luaL_error(L, "not a COPY FROM STDIN");
  lua_settop(L, 2);
  fl = PQflush(c->pg);
  if (fl < 0) {
    conn_fail(c, PQerrorMessage(c->pg));
    return copy_req(L, c, t), 0;
  }
  if (fl == 0) return copy_put_now(L, c, t, r);
  if (poll_watch(c, UV_READABLE | UV_WRITABLE) != 0) {
    conn_fail(c, "cannot watch the connection's socket");
    return copy_req(L, c, t), 0;
  }
  r->t = t;
  r->op = OP_COPY_FLUSH;
  return task_wait(L, t, req_cancel, r, "pg copy_put", 0, copy_put_k);
}

static int result_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  pgreq_t *r = (pgreq_t *)t->wdata;
  (void)status; (void)ctx;
  task_resumed(L, t);
  lua_settop(L, 1);
  if (r->chunk) {
    lua_pushlstring(L, r->chunk, (size_t)r->chunklen);
    PQfreemem(r->chunk);
    r->chunk = NULL;
    return 1;
  }
  return take_outcome(L, r);
}

/* Wait for the final result of the owner's COPY r (sent). */
static int copy_finish(lua_State *L, pgconn_t *c, task_t *t, pgreq_t *r,
                       const char *what) {
  r->op = OP_RESULT;
  lua_settop(L, 1);
  progress(c);
  if (r->state == RS_DONE) return take_outcome(L, req_take(c, r));
  r->t = t;
  t->flags |= TF_SHIELD; /* the COPY is over either way; wait for its word */
  return task_wait(L, t, req_cancel, r, what, 0, result_k);
}

/* c:copy_end([errmsg]) -> rows, tag, count: end COPY IN (with errmsg:
** abort it) and wait for the outcome */
static int conn_copy_end(lua_State *L) {
  pgconn_t *c = ((connbox_t *)check_box(L))->c;
  task_t *t = task_check_current(L, "pg copy_end");
  const char *emsg = luaL_optstring(L, 2, NULL);
  pgreq_t *r;
  if (!c) return err_raise(L, "closed", NULL, "connection is closed");
  r = copy_req(L, c, t);
  if (r->state != RS_COPY_IN) return luaL_error(L, "not a COPY FROM STDIN");
  if (PQputCopyEnd(c->pg, emsg) < 0) {
    conn_fail(c, PQerrorMessage(c->pg));
    return copy_req(L, c, t), 0;
  }
  r->state = RS_SENT;
  return copy_finish(L, c, t, r, "pg copy_end");
}

/* c:copy_get() -> the next row of COPY OUT data, or nil, tag, count */
static int conn_copy_get(lua_State *L) {
  pgconn_t *c = ((connbox_t *)check_box(L))->c;
  task_t *t = task_check_current(L, "pg copy_get");
  pgreq_t *r;
  char *buf = NULL;
  int n;
  if (!c) return err_raise(L, "closed", NULL, "connection is closed");
  r = copy_req(L, c, t);
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (r->state != RS_COPY_OUT) return luaL_error(L, "not a COPY TO STDOUT");
  n = PQgetCopyData(c->pg, &buf, 1);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
    PQfreemem(buf);
    return 1;
  }
  if (n == 0) {
    r->t = t;
    r->op = OP_COPY_GET;
    lua_settop(L, 1);
    return task_wait(L, t, req_cancel, r, "pg copy_get", 0, result_k);
  }
  r->state = RS_SENT; /* the end, or an error: the final result follows */
  return copy_finish(L, c, t, r, "pg copy_get");
}

/* c:copy_abort(): give up the task's COPY (the connection drains it) */
static int conn_copy_abort(lua_State *L) {
  connbox_t *b = check_box(L);
  task_t *t = task_current(L);
  pgconn_t *c = b->c;
  if (!c || !t) return 0;
  if (c->held && c->held->owner == t) req_free(req_take(c, c->held));
  else if (!c->closed && c->head && c->head->owner == t) req_detach(c->head);
  return 0;
}

/* ---- notifications ---- */

static int notify_k(lua_State *L, int status, lua_KContext ctx);

/* The wait for a notification was cancelled. */
static void notify_cancel(task_t *t) {
  pgconn_t *c = (pgconn_t *)t->wdata;
  if (c->nwaiter == t) c->nwaiter = NULL;
  poll_ref(c);
}

/* c:notification() -> channel, payload, pid: waits for the next one */
static int conn_notification(lua_State *L) {
  pgconn_t *c = check_conn(L);
  task_t *t = task_check_current(L, "pg notification");
  pgnote_t *e = c->nhead;
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (e) {
    c->nhead = e->next;
    if (!c->nhead) c->ntail = NULL;
    lua_pushstring(L, e->n->relname);
    lua_pushstring(L, e->n->extra);
    lua_pushinteger(L, e->n->be_pid);
    PQfreemem(e->n);
    free(e);
    return 3;
  }
  if (c->nwaiter) return err_raise(L, "busy", NULL, "another task waits for "
                                   "notifications on this connection");
  c->nwaiter = t;
  poll_ref(c);
  lua_settop(L, 1);
  return task_wait(L, t, notify_cancel, c, "pg notification", 0, notify_k);
}

static int notify_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  connbox_t *b = (connbox_t *)lua_touserdata(L, 1);
  (void)status; (void)ctx;
  if (b->c && b->c->nwaiter == t) {
    b->c->nwaiter = NULL;
    poll_ref(b->c);
  }
  task_resumed(L, t);
  return conn_notification(L);
}

/* ---- connecting ---- */

/* The connect wait was cancelled: give the connection up. */
static void connect_cancel(task_t *t) {
  pgconn_t *c = (pgconn_t *)t->wdata;
  c->connector = NULL;
  conn_close(c);
}

static int connect_k(lua_State *L, int status, lua_KContext ctx);

/* core.connect({keyword = value, ...}) -> Conn, once connected */
static int l_connect(lua_State *L) {
  const char *keys[64], *vals[64];
  int n = 0;
  task_t *t;
  connbox_t *b;
  pgconn_t *c;
  luaL_checktype(L, 1, LUA_TTABLE);
  t = task_check_current(L, "pg.connect");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    if (n == 63 || lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      return luaL_argerror(L, 1, "string keys and values expected (at most 63)");
    keys[n] = lua_tostring(L, -2);
    vals[n++] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  keys[n] = vals[n] = NULL;
  b = (connbox_t *)lua_newuserdatauv(L, sizeof *b, 0);
  b->c = NULL;
  luaL_setmetatable(L, CONN_MT);
  if (!(c = (pgconn_t *)calloc(1, sizeof *c))) return luaL_error(L, "not enough memory");
  c->rt = rt_get(L);
  c->sock = -1;
  c->boxed = 1;
  b->c = c;
  c->pg = PQconnectStartParams(keys, vals, 0);
  if (!c->pg) return luaL_error(L, "not enough memory");
  lua_replace(L, 1);
  lua_settop(L, 1);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    conn_fail(c, PQerrorMessage(c->pg));
    push_io_error(L, "io", "ECONNREFUSED", c->emsg);
    return lua_error(L);
  }
  PQsetNoticeProcessor(c->pg, notice_drop, NULL);
  c->connecting = 1;
  c->connector = t;
  if (poll_watch(c, UV_WRITABLE) != 0) {
    c->connector = NULL;
    conn_fail(c, "cannot watch the connection's socket");
    return err_raise(L, "io", NULL, "pg.connect: %s", c->emsg);
  }
  return task_wait(L, t, connect_cancel, c, "pg.connect", 0, connect_k);
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  (void)status; (void)ctx;
  task_resumed(L, t);
  lua_settop(L, 1);
  return 1;
}

/* core.parse(conninfo or URL) -> {keyword = value} (libpq's parser) */
static int l_parse(lua_State *L) {
  char *err = NULL;
  PQconninfoOption *o = PQconninfoParse(luaL_checkstring(L, 1), &err), *p;
  if (!o) {
    lua_pushstring(L, err ? err : "invalid connection string");
    if (err) PQfreemem(err);
    return err_raise(L, "value", NULL, "pg: %s", lua_tostring(L, -1));
  }
  lua_newtable(L);
  for (p = o; p->keyword; p++)
    if (p->val) {
      lua_pushstring(L, p->val);
      lua_setfield(L, -2, p->keyword);
    }
  PQconninfoFree(o);
  return 1;
}

int luaopen_loom_pg_core(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"query", conn_query}, {"exec", conn_exec},
      {"_exec_shielded", conn_exec_shielded}, {"close", conn_close_l},
      {"status", conn_status}, {"parameter", conn_parameter},
      {"backend_pid", conn_pid}, {"idle", conn_idle},
      {"copy_start", conn_copy_start}, {"copy_put", conn_copy_put},
      {"copy_end", conn_copy_end}, {"copy_get", conn_copy_get},
      {"copy_abort", conn_copy_abort}, {"notification", conn_notification},
      {NULL, NULL}};
  static const luaL_Reg fns[] = {{"connect", l_connect}, {"parse", l_parse},
                                 {"setup", pgp_setup}, {NULL, NULL}};
  if (class_new(L, CONN_MT, methods, conn_gc)) { /* __close is close */
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  luaL_newlib(L, fns);
  lua_getfield(L, -2, "__index");
  lua_setfield(L, -2, "methods"); /* lib/loom/pg.lua adds the Lua ones */
  lua_remove(L, -2);
  lua_pushinteger(L, PQlibVersion());
  lua_setfield(L, -2, "libpq_version");
  return 1;
}
