#define _GNU_SOURCE
/* A nonblocking connect through the C library, as an event loop does it: poll or epoll for
   POLLOUT, then getsockopt(SO_ERROR). POLLOUT must not come before the outcome is known, and
   SO_ERROR must never block. Three stacks on one in-process segment:
   - to 10.0.0.77 (nobody; TCP_SYNCNT 1): no POLLOUT for 200 ms, SO_ERROR 0, EALREADY, then
     an edge-triggered EPOLLOUT after about 3 s and SO_ERROR ETIMEDOUT;
   - to 10.0.0.2 port 9 (a stack, no listener): POLLOUT, SO_ERROR ECONNREFUSED;
   - to 10.0.0.3 (a stack made only after the connect): no POLLOUT for 200 ms; bytes sent
     then, and bytes sent after POLLOUT, arrive in order.
   Prints "ok" when every check held; otherwise names the first that failed and exits 1. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <vdestack.h>

#include "check.h"

static char Net[64];

static struct vdestack *stack(int host) {
  struct vdestack *s = vde_addstack(Net, "vde0");
  CHECK(s != NULL);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "ip link set vde0 up; ip addr add 10.0.0.%d/24 dev vde0", host);
  CHECK(vde_stackcmd(s, cmd) == 0);
  return s;
}

static struct sockaddr_in at(int host, int port) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(0x0a000000 | host);
  return a;
}

static int so_error(int fd) {
  int v = -1; socklen_t l = sizeof v;
  CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) == 0);
  return v;
}

static short poll1(int fd, short events, int ms) {
  struct pollfd p = { .fd = fd, .events = events };
  CHECK(poll(&p, 1, ms) >= 0);
  return p.revents;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* A nonblocking TCP socket in `s` whose connect to 10.0.0.host:port is under way. */
static int start(struct vdestack *s, int host, int port, int syncnt) {
  int fd = vde_msocket(s, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(fd >= 0);
  CHECK(setsockopt(fd, IPPROTO_TCP, TCP_SYNCNT, &syncnt, sizeof syncnt) == 0);
  struct sockaddr_in a = at(host, port);
  CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
  return fd;
}

int main(void) {
  snprintf(Net, sizeof Net, "mem://capi-nbconnect-%d", (int)getpid());
  struct vdestack *a = stack(1);

  /* Timed out. */
  double t0 = now();
  int fd = start(a, 77, 80, 1);
  CHECK(poll1(fd, POLLOUT, 200) == 0);
  double t1 = now();
  CHECK(so_error(fd) == 0);
  CHECK(now() - t1 < 0.5);
  struct sockaddr_in x = at(77, 80);
  CHECK(connect(fd, (struct sockaddr *)&x, sizeof x) == -1 && errno == EALREADY);
  int ep = epoll_create1(0);
  CHECK(ep >= 0);
  struct epoll_event ev = { .events = EPOLLOUT | EPOLLET, .data.fd = fd };
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
  struct epoll_event got[4];
  CHECK(epoll_wait(ep, got, 4, 0) == 0);
  CHECK(epoll_wait(ep, got, 4, 10000) == 1 && (got[0].events & EPOLLOUT));
  CHECK(now() - t0 > 2.5);
  CHECK(so_error(fd) == ETIMEDOUT);
  CHECK(so_error(fd) == 0);
  close(ep);
  close(fd);

  /* Refused. */
  struct vdestack *b = stack(2);
  fd = start(a, 2, 9, 6);
  CHECK(poll1(fd, POLLOUT, 5000) & POLLOUT);
  CHECK(so_error(fd) == ECONNREFUSED);
  close(fd);

  /* Up, once the peer exists; early bytes first. */
  fd = start(a, 3, 80, 6);
  CHECK(poll1(fd, POLLOUT, 200) == 0);
  CHECK(so_error(fd) == 0);
  CHECK(send(fd, "early,", 6, MSG_DONTWAIT) == 6);
  CHECK(poll1(fd, POLLOUT, 0) == 0);
  struct vdestack *c = stack(3);
  int l = vde_msocket(c, AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in la = at(3, 80);
  CHECK(l >= 0 && bind(l, (struct sockaddr *)&la, sizeof la) == 0 && listen(l, 4) == 0);
  CHECK(poll1(fd, POLLOUT, 10000) & POLLOUT);
  CHECK(so_error(fd) == 0);
  CHECK(send(fd, "late", 4, 0) == 4);
  int s = accept(l, NULL, NULL);
  CHECK(s >= 0);
  char buf[16] = { 0 };
  size_t n = 0;
  while (n < 10) {
    ssize_t r = recv(s, buf + n, sizeof buf - 1 - n, 0);
    CHECK(r > 0);
    n += r;
  }
  CHECK(n == 10 && memcmp(buf, "early,late", 10) == 0);
  close(s);
  close(fd);
  close(l);
  vde_delstack(c);
  vde_delstack(b);
  vde_delstack(a);
  printf("ok\n");
  return 0;
}
