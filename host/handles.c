/*
** handles.c -- loom._handles(): what each live handle of the runtime is, in
** words ("a TCP connection to 127.0.0.1:8080 (from 127.0.0.1:40112)", "a
** child process, pid 1234"), so that `loom test` can name the handles a
** test left open instead of counting them. One describer per libuv handle
** type; sockets and polled descriptors are told by what the descriptor is.
** A Lua layer that holds handles for a reason of its own (the HTTP
** client's pool) adds its words through loom.test's describers.
*/
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

/* "host:port" or a Unix path ("" for an unnamed socket). */
static void addr_text(const struct sockaddr *sa, socklen_t len, char *buf, size_t n) {
  char host[INET6_ADDRSTRLEN] = "";
  buf[0] = '\0';
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, host, sizeof host);
    snprintf(buf, n, "%s:%d", host, ntohs(in->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, host, sizeof host);
    snprintf(buf, n, "[%s]:%d", host, ntohs(in6->sin6_port));
  } else if (sa->sa_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    snprintf(buf, n, "%.*s", (int)(len - offsetof(struct sockaddr_un, sun_path)),
             un->sun_path);
  }
}

/* What a socket is: a listener, a connection (key: its local address, by
** which the Lua describers name it) or a pipe. 0 when fd is no socket. */
static int describe_socket(int fd, char *buf, size_t n, char *key, size_t kn) {
  struct sockaddr_storage me, peer;
  socklen_t ml = sizeof me, pl = sizeof peer, il = sizeof(int);
  int listening = 0, type = 0;
  char a[300], b[300];
  if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0) return 0;
  getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &il);
  il = sizeof(int);
  getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &il);
  addr_text((struct sockaddr *)&me, ml, a, sizeof a);
  const char *fam = me.ss_family == AF_UNIX ? "Unix" : type == SOCK_DGRAM ? "UDP" : "TCP";
  if (listening) {
    snprintf(buf, n, "a %s listener on %s", fam, a);
  } else if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) {
    addr_text((struct sockaddr *)&peer, pl, b, sizeof b);
    if (me.ss_family == AF_UNIX && !a[0] && !b[0])
      snprintf(buf, n, "a pipe (a socket pair)");
    else
      snprintf(buf, n, "a %s connection to %s (from %s)", fam, b[0] ? b : "?",
               a[0] ? a : "?");
    snprintf(key, kn, "%s", a);
  } else {
    snprintf(buf, n, "a %s socket%s%s", fam, a[0] ? " on " : "", a);
  }
  return 1;
}

/* Any other descriptor, by what /proc says it is. */
static void describe_fd(int fd, char *buf, size_t n, char *key, size_t kn) {
  char path[64], link[256] = "";
  ssize_t len;
  if (fd < 0) {
    snprintf(buf, n, "a closed descriptor");
    return;
  }
  if (describe_socket(fd, buf, n, key, kn)) return;
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  len = readlink(path, link, sizeof link - 1);
  link[len > 0 ? len : 0] = '\0';
  if (strstr(link, "pidfd")) {
    FILE *f;
    char line[128];
    int pid = 0;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if ((f = fopen(path, "r")) != NULL) {
      while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1) break;
      fclose(f);
    }
    snprintf(buf, n, "a child process, pid %d", pid);
  } else if (strncmp(link, "pipe:", 5) == 0) {
    snprintf(buf, n, "a pipe");
  } else {
    snprintf(buf, n, "descriptor %d (%s)", fd, link[0] ? link : "?");
  }
}

static void describe(uv_handle_t *h, char *buf, size_t n, char *key, size_t kn) {
  uv_os_fd_t fd = -1;
  switch (h->type) {
  case UV_TIMER: snprintf(buf, n, "a timer"); return;
  case UV_PROCESS:
    snprintf(buf, n, "a child process, pid %d", ((uv_process_t *)h)->pid);
    return;
  case UV_SIGNAL: {
    int sig = ((uv_signal_t *)h)->signum;
    snprintf(buf, n, "a handler of signal %d (%s)", sig, strsignal(sig));
    return;
  }
  case UV_FS_EVENT: {
    char p[1024];
    size_t pl = sizeof p;
    if (uv_fs_event_getpath((uv_fs_event_t *)h, p, &pl) != 0) pl = 0;
    snprintf(buf, n, "a file watcher on %.*s", (int)pl, p);
    return;
  }
  case UV_TTY: snprintf(buf, n, "a terminal stream"); return;
  case UV_ASYNC: snprintf(buf, n, "a wake-up from another thread (uv_async)"); return;
  case UV_TCP: case UV_NAMED_PIPE: case UV_UDP: case UV_POLL:
    uv_fileno(h, &fd);
    describe_fd(fd, buf, n, key, kn);
    return;
  default: snprintf(buf, n, "a libuv %s handle", uv_handle_type_name(h->type));
  }
}

typedef struct {
  loom_t *rt;
  lua_State *L;
  int n;
} walk_t;

static void walk_cb(uv_handle_t *h, void *arg) {
  walk_t *w = (walk_t *)arg;
  loom_t *rt = w->rt;
  char buf[700], key[300] = "";
  if (h == (uv_handle_t *)&rt->idle || h == (uv_handle_t *)&rt->prepare ||
      h == (uv_handle_t *)&rt->check || h == (uv_handle_t *)&rt->timer ||
      h == (uv_handle_t *)&rt->step_timer || h == (uv_handle_t *)&rt->async ||
      uv_is_closing(h))
    return;
  describe(h, buf, sizeof buf, key, sizeof key);
  lua_createtable(w->L, 0, 2);
  lua_pushstring(w->L, buf);
  lua_setfield(w->L, -2, "what");
  if (key[0]) {
    lua_pushstring(w->L, key);
    lua_setfield(w->L, -2, "address");
  }
  lua_rawseti(w->L, -2, ++w->n);
}

/* loom._handles() -> {{what=, address=}...}: the live handles other than
** the runtime's own; address is a connection's local address. */
int rt_l_handles(lua_State *L) {
  walk_t w;
  w.rt = rt_get(L);
  w.L = L;
  w.n = 0;
  lua_newtable(L);
  uv_walk(w.rt->loop, walk_cb, &w);
  return 1;
}
