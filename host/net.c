/*
** net.c -- loom.net.core: DNS, TCP and Unix-socket connect/listen, and UDP.
** The policy (trying each address, timeouts, TLS, running a handler per
** connection, graceful shutdown) is in lib/loom/net.lua.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

static const char *LISTENER_MT = "loom.Listener";
static const char *UDP_MT = "loom.Udp";

/* Parse a numeric IPv4 or IPv6 address; 0 or UV_EINVAL. */
static int parse_addr(const char *ip, int port, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(ip, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(ip, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return UV_EINVAL;
}

static void check_addr(lua_State *L, int idx, struct sockaddr_storage *ss) {
  const char *ip = arg_check_cstring(L, idx, "host");
  lua_Integer port = luaL_checkinteger(L, idx + 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, idx + 1, "port out of range");
  if (parse_addr(ip, (int)port, ss) != 0)
    luaL_argerror(L, idx, "not a numeric IP address");
}

/* libuv 1.44 silently truncates a socket path that does not fit in
** sun_path, binding or connecting to another file: refuse it instead. */
static void check_sun_path(lua_State *L, const char *path, const char *op) {
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    lua_pushfstring(L, "%s %s", op, path);
    err_uv(L, UV_ENAMETOOLONG, "io", lua_tostring(L, -1));
  }
}

/* ---- DNS ---- */

typedef struct {
  uv_getaddrinfo_t req;
  task_t *waiter;
  char host[256];
} dns_req;

/* [addrinfo] (protected): push the array of distinct address strings. */
static int push_addresses_p(lua_State *L) {
  struct addrinfo *ai = (struct addrinfo *)lua_touserdata(L, 1);
  int n = 0;
  lua_newtable(L);
  lua_newtable(L); /* seen */
  for (; ai; ai = ai->ai_next) {
    char ip[INET6_ADDRSTRLEN];
    if (ai->ai_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
    else if (ai->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
    else continue;
    if (lua_getfield(L, -1, ip) != LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, ip);
    lua_pushstring(L, ip);
    lua_rawseti(L, -3, ++n);
  }
  lua_pop(L, 1);
  return 1;
}

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dns_req *r = (dns_req *)req;
  task_t *t = r->waiter;
  if (t && status < 0)
    task_wake_err(rt_get(t->co), t, "io", uv_err_name(status), "resolve %s: %s",
                  r->host, uv_strerror(status));
  else if (t)
    task_deliver(rt_get(t->co), t, push_addresses_p, res, 0);
  uv_freeaddrinfo(res);
  free(r);
}

static void dns_cancel(task_t *t) {
  dns_req *r = (dns_req *)t->wdata;
  r->waiter = NULL;
  uv_cancel((uv_req_t *)&r->req); /* the callback still runs, and frees */
}

/* resolve(host) -> array of address strings */
static int l_resolve(lua_State *L) {
  const char *host = arg_check_cstring(L, 1, "host");
  task_t *t = task_check_current(L, "net.resolve");
  struct addrinfo hints;
  dns_req *r;
  int rc;
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (!(r = (dns_req *)calloc(1, sizeof *r))) return luaL_error(L, "not enough memory");
  snprintf(r->host, sizeof r->host, "%s", host);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = uv_getaddrinfo(rt_get(L)->loop, &r->req, dns_cb, host, NULL, &hints);
  if (rc < 0) {
    free(r);
    return err_raise(L, "io", uv_err_name(rc), "resolve %s: %s", host, uv_strerror(rc));
  }
  r->waiter = t;
  lua_settop(L, 0);
  return task_wait(L, t, dns_cancel, r, "net.resolve", 0, NULL);
}

/* ---- connect ---- */

typedef struct {
  uv_connect_t req;
  task_t *waiter;
  stream_t *s;
  char what[300];
} connect_req;

static void connect_cb(uv_connect_t *req, int status) {
  connect_req *r = (connect_req *)req;
  task_t *t = r->waiter;
  stream_t *s = r->s;
  if (t && status < 0) {
    stream_close(s);
    task_wake_err(s->rt, t, "io", uv_err_name(status), "%s: %s", r->what,
                  uv_strerror(status));
  } else if (t) {
    stream_start(s);
    task_wake(s->rt, t, 0);
  }
  free(r);
}

static void connect_cancel(task_t *t) {
  connect_req *r = (connect_req *)t->wdata;
  r->waiter = NULL;
  stream_close(r->s); /* the callback runs with ECANCELED and frees */
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  task_resumed(L, task_current(L));
  lua_pushvalue(L, (int)ctx);
  return 1;
}

/* Start connecting the new stream at top; the task waits for it. */
static int wait_connect(lua_State *L, task_t *t, connect_req *r, int rc) {
  if (rc < 0) {
    stream_close(r->s);
    lua_pushfstring(L, "%s", r->what);
    free(r);
    return err_raise(L, "io", uv_err_name(rc), "%s: %s", lua_tostring(L, -1),
                     uv_strerror(rc));
  }
  r->waiter = t;
  return task_wait(L, t, connect_cancel, r, "net.connect", lua_gettop(L), connect_k);
}

/* connect(ip, port) -> Stream */
static int l_connect(lua_State *L) {
  struct sockaddr_storage ss;
  task_t *t = task_check_current(L, "net.connect");
  connect_req *r;
  check_addr(L, 1, &ss);
  task_check_wait(L, "net.connect"); /* the peer would see an attempt */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (!(r = (connect_req *)calloc(1, sizeof *r))) return luaL_error(L, "not enough memory");
  snprintf(r->what, sizeof r->what, "connect %s port %d", lua_tostring(L, 1),
           (int)lua_tointeger(L, 2));
  r->s = stream_new(L, rt_get(L)->loop, STREAM_TCP);
  return wait_connect(L, t, r,
                      uv_tcp_connect(&r->req, &r->s->h.tcp, (struct sockaddr *)&ss, connect_cb));
}

/* connect_unix(path) -> Stream */
static int l_connect_unix(lua_State *L) {
  const char *path = arg_check_cstring(L, 1, "path");
  task_t *t = task_check_current(L, "net.connect_unix");
  connect_req *r;
  check_sun_path(L, path, "connect");
  task_check_wait(L, "net.connect_unix");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (!(r = (connect_req *)calloc(1, sizeof *r))) return luaL_error(L, "not enough memory");
  snprintf(r->what, sizeof r->what, "connect %s", path);
  r->s = stream_new(L, rt_get(L)->loop, STREAM_PIPE);
  uv_pipe_connect(&r->req, &r->s->h.pipe, path, connect_cb);
  return wait_connect(L, t, r, 0);
}

/* ---- listeners ----
** A listener accepts on its own rather than through uv_listen: libuv meets
** EMFILE by accepting and closing every waiting connection, which drops
** them. Here the socket is watched (uv_poll) only while a task waits in
** accept(); at EMFILE or ENFILE the watch stops until a Stream of this
** runtime closes (net_fd_freed) or a timer retries, so waiting connections
** stay in the kernel's queue until a descriptor is free and the loop does
** not spin. */

typedef struct listener {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;          /* owns the socket (closing it closes the fd, unlinks the path) */
  uv_poll_t poll; /* readable: a connection waits (initialised once listening) */
  uv_timer_t retry; /* the pause after EMFILE */
  loom_t *rt;
  int kind, fd, closed, paused;
  hlife_t life;    /* its box and its three handles */
  uint64_t delay;  /* the next pause, ms */
  struct listener *next_paused; /* in rt->paused while paused */
  task_t *waiter;
  uint64_t logged; /* when a pause was last reported */
} listener_t;

enum { RETRY_MIN_MS = 50, RETRY_MAX_MS = 1000 };

static void listener_close_cb(uv_handle_t *h) {
  listener_t *l = (listener_t *)h->data;
  if (hlife_done(&l->life)) free(l);
}

/* Take l off the runtime's list of paused listeners. */
static void unlink_paused(listener_t *l) {
  listener_t **p = (listener_t **)&l->rt->paused;
  while (*p && *p != l) p = &(*p)->next_paused;
  if (*p) *p = l->next_paused;
  l->next_paused = NULL;
}

/* Descriptors are there again: off the list, no pause. */
static void listener_unpause(listener_t *l) {
  if (l->paused) unlink_paused(l);
  l->paused = 0;
}

static void retry_cb(uv_timer_t *h);

/* A descriptor of this runtime was closed: paused listeners try again now
** rather than at the end of their pause (from the timer, not from inside
** the close callback that tells). */
void net_fd_freed(loom_t *rt) {
  listener_t *l = (listener_t *)rt->paused, *next;
  rt->paused = NULL;
  for (; l; l = next) {
    next = l->next_paused;
    l->next_paused = NULL;
    l->paused = 0;
    if (l->waiter) uv_timer_start(&l->retry, retry_cb, 0, 0);
  }
}

static void listener_close_handles(listener_t *l) {
  /* the poll first: it watches the fd the socket closes */
  uv_handle_t *hs[] = {(uv_handle_t *)&l->poll, (uv_handle_t *)&l->retry, &l->h.handle};
  unlink_paused(l);
  hlife_close(&l->life, hs, 3, listener_close_cb);
}

static void listener_close(listener_t *l) {
  task_t *t = l->waiter;
  if (l->closed) return;
  l->closed = 1;
  if (t) {
    l->waiter = NULL;
    task_wake_err(l->rt, t, "closed", NULL, "listener is closed");
  }
  listener_close_handles(l);
}

/* Nobody waits: the watch stays armed but holds the loop no longer (a
** connection arriving then stops it), which spares two epoll_ctl calls per
** connection to a busy server. */
static void listener_idle(listener_t *l) {
  uv_unref((uv_handle_t *)&l->poll);
  uv_timer_stop(&l->retry);
}

static void poll_stop(listener_t *l) {
  if (uv_is_active((uv_handle_t *)&l->poll)) uv_poll_stop(&l->poll);
}

static void poll_cb(uv_poll_t *h, int status, int events);

/* Watch for the next connection: the socket, or the timer while paused. */
static void listener_watch(listener_t *l) {
  if (l->paused) {
    uv_timer_start(&l->retry, retry_cb, l->delay, 0);
  } else {
    uv_ref((uv_handle_t *)&l->poll);
    if (!uv_is_active((uv_handle_t *)&l->poll)) uv_poll_start(&l->poll, UV_READABLE, poll_cb);
  }
}

/* Out of descriptors (or buffers): pause; say so at most once a second. */
static void listener_pause(listener_t *l, int err) {
  uint64_t now = uv_now(l->h.handle.loop);
  l->delay = l->paused ? (l->delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : l->delay * 2)
                       : RETRY_MIN_MS;
  if (!l->paused) {
    l->next_paused = (listener_t *)l->rt->paused;
    l->rt->paused = l;
  }
  l->paused = 1;
  poll_stop(l);
  if (!l->logged || now - l->logged > 1000) {
    fprintf(stderr, "loom: accept paused: %s; the server retries and goes on\n",
            uv_strerror(err));
    l->logged = now ? now : 1;
  }
}

/* Take one connection and push it onto L as a new Stream: 1; 0 when none
** waits or descriptors ran out (the listener then paused). */
/* Keeps in *fdp a descriptor accepted and not yet owned by a Stream, which
** the caller closes when making the Stream raised (see accept_one). */
static int accept_into(lua_State *L, listener_t *l, int *fdp) {
  for (;;) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), err = 0, rc;
    stream_t *s;
    if (fd < 0) {
      int e = errno;
      if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        listener_unpause(l);
        return 0;
      }
      listener_pause(l, uv_translate_sys_error(e)); /* EMFILE, ENFILE, ENOBUFS, ENOMEM */
      return 0;
    }
    listener_unpause(l);
    *fdp = fd;
    s = stream_new_raw(L, l->h.handle.loop, l->kind, &err);
    *fdp = -1;
    if (!s) {
      close(fd);
      continue; /* dropped for want of memory */
    }
    rc = l->kind == STREAM_TCP ? uv_tcp_open(&s->h.tcp, fd) : uv_pipe_open(&s->h.pipe, fd);
    if (rc < 0) close(fd);
    else if (l->kind == STREAM_TCP) uv_tcp_nodelay(&s->h.tcp, 1); /* as connect does */
    if (rc < 0 || stream_start(s) < 0) {
      stream_close(s);
      lua_pop(L, 1);
      continue;
    }
    return 1;
  }
}

typedef struct {
  listener_t *l;
  int fd, got;
} accept_job;

/* [job] (protected, on the main state): accept one connection. */
static int accept_p(lua_State *L) {
  accept_job *j = (accept_job *)lua_touserdata(L, 1);
  j->got = accept_into(L, j->l, &j->fd);
  return j->got;
}

/* Take one connection and move it onto L as a new Stream: 1; 0 when none
** waits or descriptors ran out (the listener then paused); -1 when memory
** ran out (the connection is dropped). The Stream is made protected on the
** main state (rt_pcall), so this is safe from a callback with L a waiting
** task's coroutine; the caller made room for one value on L. */
static int accept_one(lua_State *L, listener_t *l) {
  accept_job j;
  j.l = l;
  j.fd = -1;
  j.got = 0;
  if (rt_pcall(l->rt, accept_p, &j) != LUA_OK) {
    if (j.fd >= 0) close(j.fd);
    return -1;
  }
  if (j.got) lua_xmove(l->rt->L, L, 1);
  return j.got;
}

/* A connection may wait (or the pause is over): hand it to the waiter;
** when memory runs out, the memory error. */
static void listener_ready(listener_t *l) {
  task_t *t = l->waiter;
  int r;
  if (!t || l->closed) return;
  r = lua_checkstack(t->co, 2) ? accept_one(t->co, l) : -1;
  if (r == 0) {
    listener_watch(l);
    return;
  }
  l->waiter = NULL;
  listener_idle(l);
  if (r < 0) task_wake_memory(l->rt, t);
  else task_wake(l->rt, t, 1);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  listener_t *l = (listener_t *)h->data;
  (void)status;
  (void)events;
  if (l->waiter) listener_ready(l);
  else poll_stop(l);
}

static void retry_cb(uv_timer_t *h) {
  listener_ready((listener_t *)h->data);
}

static listener_t *check_listener(lua_State *L) {
  listener_t *l = *(listener_t **)udata_check(L, 1, LISTENER_MT);
  if (l->closed) err_raise(L, "closed", NULL, "listener is closed");
  return l;
}

static void accept_cancel(task_t *t) {
  listener_t *l = (listener_t *)t->wdata;
  if (l->waiter == t) {
    l->waiter = NULL;
    listener_idle(l);
  }
}

/* listener:accept() -> Stream */
static int li_accept(lua_State *L) {
  listener_t *l = check_listener(L);
  task_t *t;
  int r;
  lua_settop(L, 1);
  if (l->waiter) return err_raise(L, "busy", NULL, "another task is accepting");
  if (!l->paused && (r = accept_one(L, l)) != 0) {
    if (r > 0) return 1;
    rt_push_memory_error(L);
    return lua_error(L);
  }
  t = task_check_current(L, "listener:accept");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  l->waiter = t;
  listener_watch(l);
  return task_wait(L, t, accept_cancel, l, "listener:accept", 0, NULL);
}

static int li_close(lua_State *L) {
  listener_t *l = *(listener_t **)udata_check(L, 1, LISTENER_MT);
  listener_close(l);
  return 0;
}

/* listener:address() -> host, port (or the socket path) */
static int li_address(lua_State *L) {
  listener_t *l = check_listener(L);
  if (l->kind == STREAM_TCP) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int r = uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len);
    if (r < 0) return err_uv(L, r, "io", "address");
    return stream_push_address(L, (struct sockaddr *)&ss);
  } else {
    char path[1024];
    size_t len = sizeof path;
    int r = uv_pipe_getsockname(&l->h.pipe, path, &len);
    if (r < 0) return err_uv(L, r, "io", "address");
    lua_pushlstring(L, path, len);
    return 1;
  }
}

static int li_gc(lua_State *L) {
  listener_t *l = (listener_t *)hbox_take(L, 1);
  if (!l) return 0;
  if (!l->closed) {
    l->closed = 1;
    l->waiter = NULL;
    listener_close_handles(l);
  }
  if (hlife_unbox(&l->life)) free(l);
  return 0;
}

/* A listener box on the stack with an initialised socket handle of kind
** and its retry timer; the poll comes with listen(2). */
static listener_t *new_listener(lua_State *L, int kind, const char *what) {
  listener_t **box = (listener_t **)hbox_new(L, LISTENER_MT);
  listener_t *l = (listener_t *)calloc(1, sizeof *l);
  uv_loop_t *loop = rt_get(L)->loop;
  int rc;
  if (!l) err_raise(L, "io", "ENOMEM", "%s: not enough memory", what);
  l->rt = rt_get(L);
  l->kind = kind;
  l->fd = -1;
  rc = kind == STREAM_TCP ? uv_tcp_init(loop, &l->h.tcp) : uv_pipe_init(loop, &l->h.pipe, 0);
  if (rc < 0) {
    free(l);
    err_uv(L, rc, "io", what);
  }
  uv_timer_init(loop, &l->retry); /* cannot fail */
  l->h.handle.data = l->retry.data = l;
  l->life.open = 2;
  hbox_set((void **)box, l, &l->life);
  return l;
}

/* Raise for a failed bind/listen, after closing the listener. */
static int listen_failed(lua_State *L, listener_t *l, int rc, const char *what) {
  listener_close(l);
  return err_raise(L, "io", uv_err_name(rc), "%s: %s", what, uv_strerror(rc));
}

static int start_listening(lua_State *L, listener_t *l, int backlog, const char *what) {
  uv_os_fd_t fd;
  int rc = uv_fileno(&l->h.handle, &fd);
  if (rc < 0) return listen_failed(L, l, rc, what);
  if (listen(fd, backlog) < 0) return listen_failed(L, l, uv_translate_sys_error(errno), what);
  if ((rc = uv_poll_init_socket(l->h.handle.loop, &l->poll, fd)) < 0)
    return listen_failed(L, l, rc, what);
  l->poll.data = l;
  uv_unref((uv_handle_t *)&l->poll); /* referenced while a task accepts */
  l->life.open++;
  l->fd = fd;
  return 1;
}

/* A bound TCP socket for addr, SO_REUSEADDR and IPV6_V6ONLY off as libuv sets them,
** SO_REUSEPORT when asked (libuv 1.44 has no flag), owned by tcp. Bound
** here rather than by uv_tcp_bind, which defers EADDRINUSE to uv_listen. */
static int bind_tcp(uv_tcp_t *tcp, const struct sockaddr_storage *ss, int reuseport) {
  socklen_t len = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1, off = 0;
  int rc;
  if (fd < 0) return uv_translate_sys_error(errno);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      (ss->ss_family == AF_INET6 && /* "::" takes IPv4 too, whatever the sysctl says */
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) ||
      bind(fd, (const struct sockaddr *)ss, len) < 0) {
    rc = uv_translate_sys_error(errno);
    close(fd);
    return rc;
  }
  if ((rc = uv_tcp_open(tcp, fd)) < 0) close(fd);
  return rc;
}

/* listen(ip, port [, backlog [, reuseport]]) -> Listener */
static int l_listen(lua_State *L) {
  struct sockaddr_storage ss;
  int backlog = (int)luaL_optinteger(L, 3, 511), rc;
  int reuse = workers_tcp_listen(L) || lua_toboolean(L, 4); /* under loom -w: always */
  char what[300];
  listener_t *l;
  check_addr(L, 1, &ss);
  snprintf(what, sizeof what, "listen %s port %d", lua_tostring(L, 1), (int)lua_tointeger(L, 2));
  lua_settop(L, 2);
  l = new_listener(L, STREAM_TCP, what);
  if ((rc = bind_tcp(&l->h.tcp, &ss, reuse)) < 0) return listen_failed(L, l, rc, what);
  return start_listening(L, l, backlog, what);
}

/* listen_unix(path [, backlog]) -> Listener */
static int l_listen_unix(lua_State *L) {
  const char *path = arg_check_cstring(L, 1, "path");
  int backlog = (int)luaL_optinteger(L, 2, 511), rc;
  char what[300];
  listener_t *l;
  snprintf(what, sizeof what, "listen %s", path);
  check_sun_path(L, path, "listen");
  lua_settop(L, 1);
  l = new_listener(L, STREAM_PIPE, what);
  if ((rc = uv_pipe_bind(&l->h.pipe, path)) < 0) return listen_failed(L, l, rc, what);
  return start_listening(L, l, backlog, what);
}

/* ---- UDP ---- */

typedef struct udp {
  uv_udp_t h;
  loom_t *rt;
  task_t *waiter;
  int closed;
  hlife_t life;
} udp_t;

typedef struct {
  uv_udp_send_t req;
  char data[1];
} udp_send_req;

static void udp_close_cb(uv_handle_t *h) {
  udp_t *u = (udp_t *)h;
  if (hlife_done(&u->life)) free(u);
}

static void udp_close(udp_t *u) {
  task_t *t = u->waiter;
  if (u->closed) return;
  u->closed = 1;
  if (t) {
    u->waiter = NULL;
    task_wake_err(u->rt, t, "closed", NULL, "socket is closed");
  }
  hlife_close(&u->life, (uv_handle_t *[]){(uv_handle_t *)&u->h}, 1, udp_close_cb);
}

static udp_t *check_udp(lua_State *L) {
  udp_t *u = *(udp_t **)udata_check(L, 1, UDP_MT);
  if (u->closed) err_raise(L, "closed", NULL, "socket is closed");
  return u;
}

static void udp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  udp_t *u = (udp_t *)h->data;
  (void)suggested;
  if (!u->rt->rdbuf) u->rt->rdbuf = (char *)malloc(64 * 1024);
  buf->base = u->rt->rdbuf;
  buf->len = u->rt->rdbuf ? 64 * 1024 : 0;
}

typedef struct {
  const char *data;
  size_t n;
  const struct sockaddr *addr;
} datagram;

/* [datagram] (protected): push data, host, port. */
static int push_datagram_p(lua_State *L) {
  datagram *dg = (datagram *)lua_touserdata(L, 1);
  lua_pushlstring(L, dg->data, dg->n);
  return 1 + stream_push_address(L, dg->addr);
}

static void udp_recv_cb(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *addr, unsigned flags) {
  udp_t *u = (udp_t *)h->data;
  task_t *t = u->waiter;
  datagram dg;
  (void)flags;
  if (!t || (n == 0 && !addr)) return;
  u->waiter = NULL;
  uv_udp_recv_stop(h);
  if (n < 0) {
    task_wake_err(u->rt, t, "io", uv_err_name((int)n), "recv: %s", uv_strerror((int)n));
    return;
  }
  dg.data = buf->base;
  dg.n = (size_t)n;
  dg.addr = addr;
  task_deliver(u->rt, t, push_datagram_p, &dg, 0);
}

static void recv_cancel(task_t *t) {
  udp_t *u = (udp_t *)t->wdata;
  if (u->waiter == t) {
    u->waiter = NULL;
    uv_udp_recv_stop(&u->h);
  }
}

/* u:recv() -> data, host, port */
static int u_recv(lua_State *L) {
  udp_t *u = check_udp(L);
  task_t *t;
  int rc;
  if (u->waiter) return err_raise(L, "busy", NULL, "another task is receiving");
  t = task_check_current(L, "udp:recv");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  rc = uv_udp_recv_start(&u->h, udp_alloc_cb, udp_recv_cb);
  if (rc < 0) return err_uv(L, rc, "io", "recv");
  u->waiter = t;
  lua_settop(L, 1);
  return task_wait(L, t, recv_cancel, u, "udp:recv", 1, NULL);
}

static void udp_send_cb(uv_udp_send_t *req, int status) {
  (void)status;
  free(req);
}

/* u:send(data, ip, port): sends at once or queues; never waits. */
static int u_send(lua_State *L) {
  udp_t *u = check_udp(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  struct sockaddr_storage ss;
  uv_buf_t buf;
  udp_send_req *r;
  int rc;
  check_addr(L, 3, &ss);
  buf = uv_buf_init((char *)data, (unsigned)n);
  rc = uv_udp_try_send(&u->h, &buf, 1, (struct sockaddr *)&ss);
  if (rc >= 0) return 0;
  if (rc != UV_EAGAIN) return err_uv(L, rc, "io", "send");
  if (!(r = (udp_send_req *)malloc(sizeof *r + n))) return luaL_error(L, "not enough memory");
  memcpy(r->data, data, n);
  buf = uv_buf_init(r->data, (unsigned)n);
  rc = uv_udp_send(&r->req, &u->h, &buf, 1, (struct sockaddr *)&ss, udp_send_cb);
  if (rc < 0) {
    free(r);
    return err_uv(L, rc, "io", "send");
  }
  return 0;
}

static int u_local(lua_State *L) {
  udp_t *u = check_udp(L);
  struct sockaddr_storage ss;
  int len = sizeof ss, rc = uv_udp_getsockname(&u->h, (struct sockaddr *)&ss, &len);
  if (rc < 0) return err_uv(L, rc, "io", "local_address");
  return stream_push_address(L, (struct sockaddr *)&ss);
}

static int u_close(lua_State *L) {
  udp_close(*(udp_t **)udata_check(L, 1, UDP_MT));
  return 0;
}

static int u_gc(lua_State *L) {
  udp_t *u = (udp_t *)hbox_take(L, 1);
  if (!u) return 0;
  u->waiter = NULL; /* a waiter holds the box: none is left */
  udp_close(u);
  if (hlife_unbox(&u->life)) free(u);
  return 0;
}

/* udp([ip, port]) -> Udp, bound when an address is given */
static int l_udp(lua_State *L) {
  struct sockaddr_storage ss;
  int bind = !lua_isnoneornil(L, 1), rc;
  udp_t **box, *u;
  if (bind) check_addr(L, 1, &ss); /* before the userdata takes slot 1 */
  lua_settop(L, 0);
  box = (udp_t **)hbox_new(L, UDP_MT);
  u = (udp_t *)calloc(1, sizeof *u);
  if (!u) return luaL_error(L, "not enough memory");
  if ((rc = uv_udp_init(rt_get(L)->loop, &u->h)) < 0) {
    free(u);
    return err_uv(L, rc, "io", "udp");
  }
  u->rt = rt_get(L);
  u->h.data = u;
  u->life.open = 1;
  hbox_set((void **)box, u, &u->life);
  if (bind && (rc = uv_udp_bind(&u->h, (struct sockaddr *)&ss, 0)) < 0) {
    udp_close(u);
    return err_uv(L, rc, "io", "bind");
  }
  return 1;
}

/* ---- module ---- */

int luaopen_loom_net_core(lua_State *L) {
  static const luaL_Reg lm[] = {{"accept", li_accept}, {"close", li_close},
                                {"address", li_address}, {NULL, NULL}};
  static const luaL_Reg um[] = {{"recv", u_recv}, {"send", u_send},
                                {"local_address", u_local}, {"close", u_close},
                                {NULL, NULL}};
  static const luaL_Reg fns[] = {
      {"resolve", l_resolve}, {"connect", l_connect},
      {"connect_unix", l_connect_unix}, {"listen", l_listen},
      {"listen_unix", l_listen_unix}, {"udp", l_udp},
      {"park_group", stream_l_park_group}, {NULL, NULL}};
  stream_open(L);
  class_new(L, LISTENER_MT, lm, li_gc);
  class_new(L, UDP_MT, um, u_gc);
  lua_pop(L, 2);
  luaL_newlib(L, fns);
  return 1;
}
