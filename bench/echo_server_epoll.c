/*
** echo_server_epoll.c -- the ceiling of the 64-byte echo benchmark: a
** server with next to no work of its own (epoll, read, write; no event
** library, no buffering), so what it reaches is what the kernel and the
** load generator allow on this machine. Only for ping-pong loads, where a
** 64-byte echo always fits in the socket buffer.
**   echo_server_epoll PORT   (prints "ready" once listening)
*/
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  static char buf[65536];
  struct sockaddr_in a = {0};
  struct epoll_event ev = {0}, evs[1024];
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0), on = 1, i, n;
  if (argc < 2 || l < 0 || ep < 0) return 2;
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(argv[1]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1024) < 0) {
    perror("listen");
    return 1;
  }
  ev.events = EPOLLIN;
  ev.data.fd = l;
  epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    n = epoll_wait(ep, evs, 1024, -1);
    for (i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      ssize_t r;
      if (fd == l) {
        int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        continue;
      }
      r = read(fd, buf, sizeof buf);
      if (r <= 0) close(fd);
      else if (write(fd, buf, (size_t)r) < 0) close(fd);
    }
  }
}
