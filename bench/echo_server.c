/*
** echo_server.c -- the minimal C libuv echo server loom is measured against.
**   echo_server PORT
** Echoes every read back with one write; frees the buffer in the write
** callback. Idle connections hold no buffer (alloc on demand).
*/
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_write_t req;
  uv_buf_t buf;
} wreq;

static void on_close(uv_handle_t *h) { free(h); }

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  (void)h;
  buf->base = malloc(size);
  buf->len = size;
}

static void write_cb(uv_write_t *req, int status) {
  (void)status;
  free(((wreq *)req)->buf.base);
  free(req);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n > 0) {
    wreq *w = malloc(sizeof *w);
    w->buf = uv_buf_init(buf->base, (unsigned)n);
    uv_write(&w->req, s, &w->buf, 1, write_cb);
    return;
  }
  free(buf->base);
  if (n < 0) uv_close((uv_handle_t *)s, on_close);
}

static void on_conn(uv_stream_t *server, int status) {
  uv_tcp_t *c;
  if (status < 0) return;
  c = malloc(sizeof *c);
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) == 0) uv_read_start((uv_stream_t *)c, alloc_cb, read_cb);
  else uv_close((uv_handle_t *)c, on_close);
}

int main(int argc, char **argv) {
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 7000, &addr);
  if (uv_tcp_bind(&server, (struct sockaddr *)&addr, 0) || uv_listen((uv_stream_t *)&server, 1024, on_conn)) {
    fprintf(stderr, "cannot listen\n");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  return uv_run(loop, UV_RUN_DEFAULT);
}
