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
  uint8_t kind;  /* what it is the deadline of (below) */
  uint8_t weak;  /* does not keep the loop alive (loom test's own timeout) */
} tentry_t;

/* TE_SLEEP: a task's loom.sleep (the tentry is task.w.tm); TE_SCOPE: a
** timeout scope (scope_t starts with its tentry); TE_DEADLINE: the deadline
** of one wait (task.w.tm too, with TF_DEADLINE; see task_set_deadline);
** TE_SEND: a stream's send timeout (stream_timeout.c); TE_PARK: the idle
** deadline of a parked stream (the same entry, stream.wtm: a parked stream
** has nothing queued); TE_TRIM: the runtime gives memory back after a burst
** of parking (rt_trim_soon). */
enum { TE_SLEEP = 1, TE_SCOPE, TE_DEADLINE, TE_SEND, TE_PARK, TE_TRIM };

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
#define TF_QUEUED 0x20    /* sits in the ready queue (keeps its reference) */
#define TF_UNDO 0x40      /* woken with something an undo function gives back */
#define TF_QUIET 0x80     /* its failure is raised by loom.run, not reported */
#define TF_DEADLINE 0x100 /* the current wait has a deadline in w.tm */
#define TF_INSHIELD 0x200 /* inside loom.shield: a SCOPE_SHIELD is in scopes */

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
  uint16_t flags;
  uint8_t status, wake;
};

/* A timeout or group cancel scope of one task; lives in a userdata on the
** task's stack, so it outlives every wait inside it. A shield scope
** (loom.shield) hides the task's cancellation and every scope outside it. */
enum { SCOPE_TIMEOUT = 1, SCOPE_GROUP, SCOPE_SHIELD };
struct scope {
  tentry_t tm; /* must stay first: heap entries are cast back to scopes */
  scope_t *parent;
  task_t *task;
  lua_State *L; /* the thread whose stack holds it (see co_yield) */
  double secs;
  int kind, expired, err_ref;
};

#define BLOCK_CLASSES 16 /* runtime.c keeps freed Lua blocks of 1..256 bytes */

/* Streams give their read buffer back while they wait with nothing
** buffered; the runtime keeps a few of the smallest for the next reads. */
#define RT_RBUF 4096
#define RT_RBUFS 64

struct loom {
  lua_State *L;
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int own;
  int borrowed;         /* L belongs to the interpreter that loaded loom.so */
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
  size_t nweak;         /* weak entries in the heap */
  int in_timer_cb;
  int noyield;          /* coroutines resumed where the task cannot yield */
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
  char *rdbuf;          /* the one buffer every stream reads into */
  char *rbufs[RT_RBUFS];  /* streams' spare RT_RBUF-byte buffers (rt_rbuf_get) */
  int nrbufs;
  void *blocks[BLOCK_CLASSES + 1]; /* freed small Lua blocks by size class */
  size_t kept;          /* bytes waiting there */
  int own_closing;      /* the runtime's own handles not yet closed */
  void *paused;         /* listeners paused for want of descriptors (net.c) */
  unsigned budget_ms;   /* cpu_budget_ms; 0 none (sandbox.c) */
  uint64_t budget_ns, run_start; /* the budget, when the task was resumed */
  int budget_state;     /* 0 within, 1 warned, 2 ended for good */
  uint64_t step_start;  /* when the loom_step running began; 0 outside one */
  int host_call;        /* a script's metamethod called by loom, outside tasks */
  char *module_dir;     /* loom_options.module_dir, copied */
  loom_report_fn report_fn;
  void *report_ud;
  char *warnbuf;        /* a warning being assembled (lua_warn pieces) */
  int err_ref;          /* the last error value (loom_push_error) */
  void *slabs;          /* stream_park.c: chunks of stream_t slots with room */
  void *slab_spare;     /* one empty chunk kept for the next stream */
  uint32_t parks;       /* streams parked since the last trim */
  tentry_t trim_tm;     /* TE_TRIM */
  uint64_t trim_first;  /* when the pending trim was first asked for */
};

/* sandbox.c */
void rt_report(loom_t *rt, const char *kind, const char *text);
void rt_keep_error(loom_t *rt, int idx); /* runtime.c */
void sandbox_prepare(lua_State *L);
void sandbox_apply(lua_State *L, loom_t *rt);
void sandbox_budget_init(loom_t *rt, unsigned ms);
int rt_tostring_meta(lua_State *L, int idx);
/* Is the standard library cut to the capability bits? */
#define rt_sandboxed(rt) (((rt)->libs & LOOM_LIBS_STD) != LOOM_LIBS_STD)

/* net.c: a descriptor was closed; paused listeners may accept again. */
void net_fd_freed(loom_t *rt);

/* workers.c: the worker's side of `loom -w N`. */
int workers_tcp_listen(lua_State *L); /* 1: this listener takes SO_REUSEPORT */
void workers_open(lua_State *L);

/* runtime.c */
loom_t *rt_get(lua_State *L);
void rt_set_error(loom_t *rt, const char *msg);
void rt_ensure_running(loom_t *rt);
void rt_open(lua_State *L);
void rt_sigint_restore(loom_t *rt);
int rt_l_handles(lua_State *L); /* handles.c: loom._handles() */
void rt_exit(lua_State *L, int status);
extern char rt_exit_tag;
int rt_pcall(loom_t *rt, lua_CFunction fn, void *ud);
int rt_headroom(loom_t *rt, size_t n);
void rt_push_memory_error(lua_State *L);
int rt_raise(lua_State *L, int status);
/* the runtime's own growing buffers, counted against memory_limit */
void *rt_malloc(loom_t *rt, size_t n);
void *rt_realloc(loom_t *rt, void *ptr, size_t osize, size_t nsize);
void rt_free(loom_t *rt, void *ptr, size_t size);
void *rt_rbuf_get(loom_t *rt);
void rt_rbuf_put(loom_t *rt, void *p);
/* After a burst of parked connections, once things are quiet: a full
** collection, the small-block lists and the C heap's free pages given back. */
void rt_trim_soon(loom_t *rt);
void rt_trim(loom_t *rt);

/* handle.c: C classes and the lifetime of boxed objects with handles. */
typedef struct hlife {
  int boxed;   /* a Lua box points at the object */
  int open;    /* holders other than the box: handles not yet closed */
  int closing; /* hlife_close was called */
} hlife_t;
void hlife_close(hlife_t *lf, uv_handle_t *const *hs, int n, uv_close_cb cb);
int hlife_done(hlife_t *lf);
int hlife_unbox(hlife_t *lf);
void **hbox_new(lua_State *L, const char *mt);
void hbox_set(void **box, void *obj, hlife_t *lf);
void *hbox_take(lua_State *L, int idx);
int class_new(lua_State *L, const char *name, const luaL_Reg *methods,
              lua_CFunction gc);
void class_add(lua_State *L, const char *name, const luaL_Reg *m);
void class_open(lua_State *L); /* loom._interpose, loom._isa */

/* error.c: every runtime failure seen by scripts is one of these. */
void err_push(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...);
int err_raise(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...);
int err_uv(lua_State *L, int uverr, const char *kind, const char *what);
int err_is_kind(lua_State *L, int idx, const char *kind);
void err_open(lua_State *L);
/* A string the OS takes as a C string: raise a bad-argument error when it
** contains a zero byte (what names it in the message: "path", "host"). */
void arg_check_nul(lua_State *L, const char *s, size_t n, int arg,
                   const char *what);
const char *arg_check_cstring(lua_State *L, int arg, const char *what);

/* task.c */
extern char task_tag; /* the light userdata a host yield carries */
task_t *task_current(lua_State *L);
task_t *task_check_current(lua_State *L, const char *what);
task_t *task_spawn(lua_State *L, int nargs); /* fn+args -> Task on stack */
int task_wait(lua_State *L, task_t *t, wait_cancel_fn cancel, void *wdata,
              const char *what, lua_KContext ctx, lua_KFunction k);
void task_set_deadline(loom_t *rt, task_t *t, double secs);
void task_deadline_fired(loom_t *rt, task_t *t);
int task_resumed(lua_State *L, task_t *t);
int task_yield(lua_State *L, task_t *t);
int task_can_wait(lua_State *L);
int task_check_wait(lua_State *L, const char *what);
void task_wake(loom_t *rt, task_t *t, int nvals);
void task_wake_error(loom_t *rt, task_t *t);
int task_deliver(loom_t *rt, task_t *t, lua_CFunction fn, void *ud, int error);
void task_wake_err(loom_t *rt, task_t *t, const char *kind, const char *code,
                   const char *fmt, ...);
void task_wake_memory(loom_t *rt, task_t *t);
void task_wake_undo(loom_t *rt, task_t *t, int nvals, wait_cancel_fn undo);
void task_check_callable(lua_State *L, int idx);
void *udata_check(lua_State *L, int idx, const char *tname);
void task_abort(loom_t *rt, task_t *t);
int task_cancel(loom_t *rt, task_t *t);
int task_interrupted(task_t *t);
int task_raise_interrupt(lua_State *L, task_t *t);
int task_push_interrupt(lua_State *L, task_t *t);
void task_drain(loom_t *rt);
void task_push_fn(lua_State *L, task_t *t); /* its function, while it runs */
void task_report_waits(loom_t *rt); /* deadlock.c */
void task_push_waits(lua_State *L, loom_t *rt);
void task_cancel_all(loom_t *rt);
void task_open(lua_State *L);
int task_push_results(lua_State *L, task_t *t);

void tlist_push(tlist_t *l, task_t *t);
task_t *tlist_pop(tlist_t *l);
void tlist_cancel(task_t *t); /* a wait_cancel_fn for list waits */
void tlist_wake_all(loom_t *rt, tlist_t *l);

/* timer.c */
void heap_push(loom_t *rt, tentry_t *e);
void heap_remove(loom_t *rt, tentry_t *e);
uint64_t timer_due(double secs);
void scope_push(lua_State *L, task_t *t, scope_t *sc);
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

/* stream.c: the Stream shared by TCP, Unix sockets, TLS, pipes and ttys. */
typedef struct stream stream_t;

/* A filter sits between the socket and the Stream's buffers (TLS). */
typedef struct stream_filter {
  /* ciphertext arrived: feed it, deliver plaintext with stream_deliver */
  void (*on_read)(stream_t *s, const char *data, size_t n);
  /* plaintext to send: returns 0 or a UV_* error; sends with stream_send */
  int (*write)(stream_t *s, const char *data, size_t n);
  void (*on_eof)(stream_t *s);     /* the transport ended */
  void (*free)(stream_t *s);       /* release the filter's state */
} stream_filter;

enum { STREAM_TCP = 1, STREAM_PIPE, STREAM_TTY, STREAM_FILE };

/* Read forms (stream_read): READ_MORE waits until more than arg bytes are
** buffered (true) or the end (false), consuming nothing. */
enum { READ_ANY = 1, READ_EXACT, READ_LINE, READ_UNTIL, READ_ALL, READ_MORE };
/* For protocol layers (HTTP, WebSocket) that parse in place in the read
** buffer: the buffered bytes; drop the first n; whether the stream is idle
** (open, no end, error or unsent data, nothing buffered, no reader); push
** the error its end was (1), nothing for a clean end (0). */
const char *stream_peek(stream_t *s, size_t *n);
void stream_consume(stream_t *s, size_t n);
int stream_idle(stream_t *s);
int stream_end_error(lua_State *L, stream_t *s, const char *what);
int stream_read(lua_State *L, int mode, size_t arg);
int stream_try_read(lua_State *L, stream_t *s, int mode, size_t arg);
int stream_wait_read(lua_State *L, stream_t *s, int mode, size_t arg, double secs,
                     lua_KContext ctx, lua_KFunction k);
int stream_write_bufs(lua_State *L, stream_t *s, const uv_buf_t *bufs, int n);

/* The fields are stream.c's, and the transports' and the filter's that
** build on it (net.c, process.c, tls.c); protocol layers use the functions
** above. */
struct stream {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_tty_t tty;
  } h;
  loom_t *rt;
  int kind;
  char *rbuf;            /* unread bytes are rbuf[rpos, rlen) */
  size_t rpos, rlen, rcap, scan; /* scan: where a line search resumes */
  size_t limit;          /* longest line / read_until section */
  task_t *reader;        /* the task waiting to read, if any */
  int rmode;             /* what it waits for (READ_*) */
  size_t rarg;
  int reading, eof, rerr; /* uv_read_start active; end seen; read error */
  size_t wqueued;        /* bytes in uv_write requests not yet done */
  int werr;              /* first write error */
  tlist_t writers;       /* tasks waiting for wqueued to drop */
  tlist_t flushers;      /* tasks waiting for wqueued == 0 */
  int closed, shut;
  hlife_t life;          /* its box and its handle (see handle.c) */
  int fd;                /* STREAM_FILE: a regular file, read and written directly */
  const char *delim;     /* read_until's delimiter (kept alive by the reader) */
  size_t dlen;
  const stream_filter *filter;
  void *fdata;
  int hold;              /* the filter waits for transport bytes (a TLS
                            handshake): read and keep the loop alive */
  const char *ekind;     /* a filter's fatal error (static kind, message) */
  char *emsg;            /* raised by reads once the buffer is drained */
  tentry_t wtm;          /* TE_SEND: the send timeout's entry in the heap */
  double wtimeout;       /* seconds without write progress before an abort; 0: none */
  uint64_t wlast;        /* uv_hrtime() of the last write progress */
  int reset;             /* close with a reset (SO_LINGER 0), dropping unsent bytes */
  struct park_group *park; /* parked in this group (stream_park.c); NULL: not */
  stream_t *pprev, *pnext; /* the group's parked streams */
};

stream_t *stream_new(lua_State *L, uv_loop_t *loop, int kind);
stream_t *stream_new_raw(lua_State *L, uv_loop_t *loop, int kind, int *err);
stream_t *stream_new_fd(lua_State *L, uv_loop_t *loop, int fd, int *err);
stream_t *stream_check(lua_State *L, int idx);
int stream_start(stream_t *s);
void stream_deliver(stream_t *s, const char *data, size_t n);
void stream_deliver_eof(stream_t *s, int err);
void stream_deliver_error(stream_t *s, const char *kind, const char *msg);
void stream_set_filter(stream_t *s, const stream_filter *f, void *fdata);
void stream_update(stream_t *s);
int stream_send(stream_t *s, const char *data, size_t n);
void stream_close(stream_t *s);
int stream_abort(lua_State *L); /* lua_CFunction: close at once, drop unsent bytes */
/* The send timeout (stream_timeout.c): arm when a write is queued, note
** progress from write callbacks, stop on close; the heap calls fired. */
void stream_send_queued(stream_t *s);
void stream_send_progress(stream_t *s);
void stream_send_stop(stream_t *s);
void stream_send_fired(loom_t *rt, stream_t *s);
int stream_set_send_timeout(lua_State *L);
void stream_send_linger(stream_t *s);
int stream_push_address(lua_State *L, const struct sockaddr *sa);
/* stream.c for stream_park.c: the Stream at idx leaves its box (which then
** reads as closed) and gives its read buffer back; a new box for s. */
stream_t *stream_unbox(lua_State *L, int idx);
void stream_rebox(lua_State *L, stream_t *s);
/* stream_park.c: idle server connections parked without a task, and the
** slabs every stream_t comes from. */
int stream_parkable(stream_t *s);
void stream_park_wake(stream_t *s);  /* bytes arrived */
void stream_park_end(stream_t *s);   /* the end, an error, the deadline: close */
int stream_l_park_group(lua_State *L); /* net core: park_group(fn) */
void stream_park_fired(loom_t *rt, stream_t *s); /* TE_PARK is due */
stream_t *stream_slab_get(loom_t *rt);
void stream_slab_put(loom_t *rt, stream_t *s);
void stream_slab_release(loom_t *rt);
void stream_open(lua_State *L);
/* tls.c: the Stream's TLS methods (nil on a plain stream), part of the
** class from the start whether or not loom.tls was loaded */
extern const luaL_Reg tls_stream_methods[];

/* http_parse.c: the HTTP/1.1 syntax and its rules, free of Lua (the fuzz
** targets drive it directly); http.c is its binding, loom.http.core. */
extern unsigned char http_tchar[256]; /* token characters (RFC 9110 5.6.2) */
extern const char *const http_methods[];
#define HTTP_DEFAULT_TYPE "text/plain; charset=utf-8" /* of the responses we make */
void http_init(void); /* fills the tables; idempotent */
int http_ieq(const char *p, size_t n, const char *lit);
long http_unescape(char *out, const char *s, size_t n, int plus);
int http_split_target(const char *t, size_t n, int connect, const char **path, size_t *plen,
                      const char **q, size_t *qlen);
int http_query_next(const char *s, size_t n, size_t *pos, const char **k, size_t *kl,
                    const char **v, size_t *vl);
const char *http_reason(int status);
int http_no_body_status(long status);
int http_valid_name(const char *p, size_t n);
int http_valid_value(const char *p, size_t n);
int http_accepts_gzip(const char *v, size_t n);
int http_compressible_type(const char *t, size_t n);
enum { HEAD_FOUND, HEAD_MORE, HEAD_LONG };
int http_find_head(const char *p, size_t have, size_t from, size_t max, size_t *skip,
                   size_t *n);

/* A parsed request or response head. The parser hands each field to
** field(ud, lower-case name, value) and fills in the rest. */
enum { HTTP_GZIP = 1, HTTP_DEFLATE }; /* the codings we can undo */
typedef void (*http_field_fn)(void *ud, const char *name, size_t nl, const char *v,
                              size_t vl);
typedef struct http_head {
  int status;           /* 0, or the status to refuse the message with */
  const char *why;      /* ... and the reason (a static string) */
  int minor;            /* HTTP/1.minor */
  int method;           /* a request's: index in http_methods */
  const char *target;   /* a request's target, inside the parsed bytes */
  size_t target_len;
  int code;             /* a response's status code */
  const char *reason;   /* its reason phrase, inside the parsed bytes */
  size_t reason_len;
  int64_t cl;           /* Content-Length; -1: none */
  int chunked;          /* chunked is the final transfer coding */
  int te_coding;        /* HTTP_GZIP or HTTP_DEFLATE under chunked; 0: none */
  int keep_alive;       /* the connection stays open after this message */
  int upgrade;          /* Connection: upgrade */
  int expect;           /* Expect: 100-continue (HTTP/1.1 requests) */
  /* the parser's own */
  const char *p, *end;
  int nheaders, max_headers, te, te_codings, te_bad, te_unknown;
  int host_count, host_bad, conn_close, conn_keep;
  http_field_fn field;
  void *ud;
} http_head;
int http_parse_request(http_head *h, const char *s, size_t n, int max_headers,
                       http_field_fn field, void *ud);
int http_parse_response(http_head *h, const char *s, size_t n, int max_headers,
                        http_field_fn field, void *ud);

/* The chunked body decoder. */
typedef struct chunked {
  int state, digits;
  uint64_t size;      /* bytes of the current chunk still to come */
  size_t trailer;     /* bytes of trailer section seen */
  const char *err;    /* set once the input was found malformed */
} chunked_t;
typedef void (*chunked_emit)(void *ud, const char *data, size_t n);
void chunked_init(chunked_t *c);
size_t chunked_step(chunked_t *c, const char *in, size_t n, size_t max,
                    chunked_emit emit, void *ud, const char **err);
int chunked_done(const chunked_t *c);

/* http_body.c: the body reader shared by the server and the client. */
enum { BODY_LENGTH = 1, BODY_CHUNKED, BODY_EOF };
void *http_body_new(lua_State *L, int mode, uint64_t length, int te, int ce, uint64_t max,
                    double timeout, int response);
void http_body_expect(void *body);
void http_body_open(lua_State *L);
void http_gzip_open(lua_State *L);
int http_gzip_push(lua_State *L, const char *s, size_t n, int level);

/* websocket.c: the RFC 6455 frame decoder, kept free of Lua so that the
** fuzz target (tests/fuzz/fuzz_websocket.c) drives it directly. */
enum { WS_MORE, WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG, WS_ERROR };

typedef struct ws_decoder {
  int expect_mask;        /* a server's decoder: frames must be masked */
  uint64_t max_message;   /* a longer message fails with 1009 */
  /* the frame being read */
  int in_frame, fin, op, masked;
  uint64_t remaining;     /* payload bytes still to come */
  unsigned char key[4];
  unsigned mpos;          /* offset into the mask key */
  /* the data message being assembled (op 1 or 2; 0: none) */
  int msg_op;
  unsigned char *msg;
  size_t msg_len, msg_cap;
  unsigned char u_need, u_lo, u_hi; /* UTF-8 validator state (text) */
  /* the control frame being read: ping, pong or close */
  unsigned char ctl[125];
  size_t ctl_len;
  int close_code;         /* WS_CLOSE: the peer's code, 1005 when none */
  int err_code;           /* WS_ERROR: the close code to fail with (sticky) */
  const char *err_reason;
} ws_decoder;

void ws_decoder_init(ws_decoder *d, int expect_mask, uint64_t max_message);
int ws_decode(ws_decoder *d, const unsigned char *in, size_t n, size_t *used);
void ws_decoder_free(ws_decoder *d);
int ws_utf8_valid(const unsigned char *p, size_t n);

/* fs.c, file.c: loom.fs. One chain of libuv file requests, run for one
** waiting task (or, once detached, on its own until it has cleaned up). */
typedef struct fsreq fsreq_t;
typedef struct fsstate fsstate_t;
typedef struct file file_t;
typedef void (*fsreq_step)(fsreq_t *r);

struct fsreq {
  uv_fs_t req;
  loom_t *rt;
  fsstate_t *st;
  task_t *task;      /* the waiting task; NULL once detached */
  file_t *file;      /* the File worked on (a reference), or NULL */
  fsreq_step step;   /* runs when the current libuv request completes */
  lua_CFunction push; /* in the task: raise r->err or push the results */
  const char *what;  /* the Lua name, for error messages */
  const char *path, *path2; /* strings on the task's stack: valid while it waits */
  uv_file fd;        /* a descriptor the request owns (closed if abandoned); -1 */
  int err;           /* the first failure (UV_E*); 0 */
  int op, eof, holds; /* holds: the request holds the File's lock */
  char *buf;         /* C memory the thread pool reads into or writes from */
  size_t len, cap, n;
  const char *src;   /* data to write: a string on the task's stack */
  size_t srclen, srcoff;
  int64_t size;
};

fsreq_t *fsreq_alloc(loom_t *rt, fsstate_t *st, fsreq_step step);
void fsreq_cb(uv_fs_t *q);
void fsreq_opened_fstat(fsreq_t *r, fsreq_step next);
void fsreq_end(fsreq_t *r);
void fsreq_finish(fsreq_t *r);
void fsreq_discard(fsreq_t *r);
void fsreq_free(fsreq_t *r);
void fsreq_cancel(task_t *t);
int fsreq_start(lua_State *L, fsreq_t *r, int rc, lua_KFunction k);
int fsreq_deliver_k(lua_State *L, int status, lua_KContext ctx);
fsreq_t *fsreq_resumed(lua_State *L);
fsreq_t *fs_begin(lua_State *L, const char *what, fsreq_step step,
                  lua_CFunction push);
const char *fs_check_path(lua_State *L, int i);
uint64_t fs_mem_limit(fsstate_t *st);
int fs_raise(lua_State *L, int err, const char *what, const char *path,
             const char *path2);
void file_req_gone(fsreq_t *r);
void file_open_class(lua_State *L); /* the File class and fs.open */

/* modules.c: bundled Lua modules (generated into modules_gen.c), preload
** registration, and the opener of `require "loom"` (the C core, then
** lib/loom.lua and lib/loom/extra.lua). */
void modules_preload(lua_State *L, unsigned libs);
int modules_load(lua_State *L, const char *name);
int loom_open_core(lua_State *L);
/* runtime.c: a runtime around a Lua state it does not own (module/luaopen.c,
** the loom.so of a stock lua5.4) */
loom_t *rt_attach(lua_State *L);
void rt_detach(loom_t *rt);

/* vbuf.c: values copied into C memory to cross threads (worker, sqlite). */
typedef struct vbuf {
  char *p;
  size_t len, cap;
  int oom; /* a write failed for lack of memory; the buffer is incomplete */
  size_t max; /* bytes it may grow to (a capped runtime's memory_limit); 0 any */
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
  size_t mem_limit;       /* the runtime's memory_limit; 0 none */
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
