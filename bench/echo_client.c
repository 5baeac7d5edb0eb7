/*
** echo_client.c -- load generator for the echo benchmarks (libuv, C).
**   echo_client PORT pingpong CONNS SIZE SECONDS  -> messages/s
**     each connection sends SIZE bytes, waits for them back, repeats
**   echo_client PORT bulk 1 CHUNK SECONDS         -> MiB/s through one connection
**     writes CHUNK-byte blocks continuously, counts bytes echoed back
**   echo_client PORT idle CONNS 0 SECONDS         -> opens CONNS connections, holds them
**   echo_client PORT httpidle CONNS 0 SECONDS     -> each connection makes one keep-alive
**     HTTP/1.1 GET / and then holds the connection idle (prints "connected N" once
**     every connection has had its answer)
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t creq;
  size_t got;
} conn;

static const char *mode;
static size_t size;
static char *payload;
static uint64_t messages, bytes_back, bytes_sent;
static int connected, nconns, stopping, answered;
static const char http_get[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static uv_timer_t timer;
static char rdbuf[256 * 1024];

static void alloc_cb(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h; (void)s;
  b->base = rdbuf;
  b->len = sizeof rdbuf;
}

static void write_cb(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* Write straight away when the socket takes it all (the common case), so
** the load generator spends as little of its core as it can: the echo
** servers compared here come close to what one core of it can drive. */
static void send_block(conn *c) {
  uv_buf_t b = uv_buf_init(payload, (unsigned)size);
  int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
  bytes_sent += size;
  if (n == (int)size) return;
  if (n > 0) b = uv_buf_init(payload + n, (unsigned)(size - (size_t)n));
  uv_write(malloc(sizeof(uv_write_t)), (uv_stream_t *)&c->tcp, &b, 1, write_cb);
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn *c = (conn *)s;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  if (stopping) return;
  bytes_back += (size_t)n;
  if (strcmp(mode, "httpidle") == 0) { /* the small answer comes in one read */
    if (c->got++ == 0 && ++answered == nconns) {
      printf("connected %d\n", answered);
      fflush(stdout);
    }
    return;
  }
  if (strcmp(mode, "pingpong") == 0) {
    c->got += (size_t)n;
    while (c->got >= size) {
      c->got -= size;
      messages++;
      send_block(c);
    }
  } else if (strcmp(mode, "bulk") == 0) {
    while (bytes_sent - bytes_back < 4 * size) send_block(c); /* keep the pipe full */
  }
}

static void on_connect(uv_connect_t *req, int status) {
  conn *c = (conn *)req->data;
  if (status < 0) {
    fprintf(stderr, "connect: %s\n", uv_strerror(status));
    exit(1);
  }
  connected++;
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (strcmp(mode, "httpidle") == 0) {
    uv_buf_t b = uv_buf_init((char *)http_get, sizeof http_get - 1);
    uv_write(malloc(sizeof(uv_write_t)), (uv_stream_t *)&c->tcp, &b, 1, write_cb);
  } else if (strcmp(mode, "idle") != 0) {
    send_block(c);
    if (strcmp(mode, "bulk") == 0) { send_block(c); send_block(c); send_block(c); }
  } else if (connected == nconns) {
    printf("connected %d\n", connected);
    fflush(stdout);
  }
}

static void on_timer(uv_timer_t *t) {
  stopping = 1;
  uv_stop(t->loop);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  int i, port, seconds;
  uint64_t start;
  double elapsed;
  if (argc < 6) {
    fprintf(stderr, "usage: echo_client PORT MODE CONNS SIZE SECONDS\n");
    return 2;
  }
  port = atoi(argv[1]);
  mode = argv[2];
  nconns = atoi(argv[3]);
  size = (size_t)atol(argv[4]);
  seconds = atoi(argv[5]);
  payload = malloc(size ? size : 1);
  memset(payload, 'x', size ? size : 1);
  uv_ip4_addr("127.0.0.1", port, &addr);
  for (i = 0; i < nconns; i++) {
    conn *c = calloc(1, sizeof *c);
    uv_tcp_init(uv_default_loop(), &c->tcp);
    c->creq.data = c;
    uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&addr, on_connect);
  }
  uv_timer_init(uv_default_loop(), &timer);
  uv_timer_start(&timer, on_timer, (uint64_t)seconds * 1000, 0);
  start = uv_hrtime();
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  elapsed = (double)(uv_hrtime() - start) / 1e9;
  if (strcmp(mode, "pingpong") == 0)
    printf("%.0f msg/s\n", (double)messages / elapsed);
  else if (strcmp(mode, "bulk") == 0)
    printf("%.1f MiB/s\n", (double)bytes_back / elapsed / 1048576.0);
  else
    printf("held %d\n", connected);
  return 0;
}
