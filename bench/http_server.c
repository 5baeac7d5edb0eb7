/*
** http_server.c -- a minimal C libuv hello-world HTTP/1.1 keep-alive server:
** the floor for the HTTP benchmark. Answers every "\r\n\r\n"-terminated
** head with a fixed response; no real parsing.   http_server PORT
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           "Content-Length: 13\r\n\r\nHello, World!";
typedef struct {
  uv_tcp_t tcp;
  char tail[4]; /* the last bytes seen, to find a head's end across reads */
} conn;
static char buf[65536];

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h; (void)s;
  b->base = buf;
  b->len = sizeof buf;
}
static void on_close(uv_handle_t *h) { free(h); }
static void write_cb(uv_write_t *w, int st) { (void)st; free(w); }

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = (conn *)s;
  ssize_t i;
  int heads = 0;
  if (n < 0) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  for (i = 0; i < n; i++) {
    memmove(c->tail, c->tail + 1, 3);
    c->tail[3] = b->base[i];
    if (memcmp(c->tail, "\r\n\r\n", 4) == 0) heads++;
  }
  while (heads-- > 0) {
    uv_buf_t out = uv_buf_init((char *)RESP, sizeof RESP - 1);
    int r = uv_try_write(s, &out, 1);
    uv_write_t *w;
    if (r == (int)out.len) continue;
    if (r > 0) out = uv_buf_init((char *)RESP + r, (unsigned)(out.len - (unsigned)r));
    w = malloc(sizeof *w);
    uv_write(w, s, &out, 1, write_cb);
  }
}

static void on_conn(uv_stream_t *srv, int st) {
  conn *c;
  if (st < 0) return;
  c = calloc(1, sizeof *c);
  uv_tcp_init(srv->loop, &c->tcp);
  if (uv_accept(srv, (uv_stream_t *)c) == 0) uv_read_start((uv_stream_t *)c, alloc_cb, read_cb);
  else uv_close((uv_handle_t *)c, on_close);
}

int main(int argc, char **argv) {
  uv_tcp_t srv;
  struct sockaddr_in a;
  uv_tcp_init(uv_default_loop(), &srv);
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 8080, &a);
  if (uv_tcp_bind(&srv, (struct sockaddr *)&a, 0) || uv_listen((uv_stream_t *)&srv, 1024, on_conn))
    return 1;
  puts("ready");
  fflush(stdout);
  return uv_run(uv_default_loop(), UV_RUN_DEFAULT);
}
