#define _GNU_SOURCE
/* The C library's table of what each fd is.

   ./fdcache count: send/recv/sendto/recvfrom/sendmsg/recvmsg on kernel sockets (AF_UNIX
   stream and datagram pairs) and on stack sockets (TCP, UDP) between two getppid() calls,
   which mark the part the test (run under strace) counts getsockopt/getpeername calls in:
   there must be none. Says its pid on stderr, so the test finds its main thread's trace.

   ./fdcache reuse: an fd number that held a stack socket and then a kernel one (and back),
   through close, fclose, dup2 over a stack fd, and fcntl(F_DUPFD): each call on it does what
   the fd now is.

   Prints "ok" when every check held; otherwise names the first that failed and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <vdestack.h>

#include "check.h"

/* A UDP socket of `s` bound to 127.0.0.1:port. */
static int udp(struct vdestack *s, int port) {
  int fd = vde_msocket(s, AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = lo(port);
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  return fd;
}

/* A kernel AF_UNIX datagram socket bound to the abstract name "\0vdestack-fdcache-PID-n". */
static int unix_dgram(int n, struct sockaddr_un *name, socklen_t *len) {
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  CHECK(fd >= 0);
  memset(name, 0, sizeof *name);
  name->sun_family = AF_UNIX;
  int k = snprintf(name->sun_path + 1, sizeof name->sun_path - 1, "vdestack-fdcache-%d-%d",
                   (int)getpid(), n);
  *len = offsetof(struct sockaddr_un, sun_path) + 1 + k;
  CHECK(bind(fd, (struct sockaddr *)name, *len) == 0);
  return fd;
}

/* One datagram from `from` to the stack UDP socket `to` at 127.0.0.1:port arrives as sent,
   with its sender's address. */
static void udp_round(int from, int from_port, int to, int port) {
  struct sockaddr_in a = lo(port), src;
  socklen_t sl = sizeof src;
  char buf[32];
  CHECK(sendto(from, "udp", 3, 0, (struct sockaddr *)&a, sizeof a) == 3);
  CHECK(recvfrom(to, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 3);
  CHECK(memcmp(buf, "udp", 3) == 0 && sl == sizeof src && src.sin_port == htons(from_port));
}

/* One datagram from the kernel socket `from` to the kernel socket named `name` arrives as
   sent (no stack header added or taken away). */
static void unix_round(int from, int to, struct sockaddr_un *name, socklen_t len) {
  char buf[32];
  CHECK(sendto(from, "unix", 4, 0, (struct sockaddr *)name, len) == 4);
  struct sockaddr_un src;
  socklen_t sl = sizeof src;
  CHECK(recvfrom(to, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 4);
  CHECK(memcmp(buf, "unix", 4) == 0);
}

static void count(struct vdestack *s) {
  int kp[2], kd[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, kp) == 0);
  CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, kd) == 0);
  int l = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = lo(80);
  CHECK(l >= 0 && bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 4) == 0);
  int c = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(c >= 0 && connect(c, (struct sockaddr *)&a, sizeof a) == 0);
  int t = accept(l, NULL, NULL);
  CHECK(t >= 0);
  int u1 = udp(s, 5001), u2 = udp(s, 5002);
  struct sockaddr_in u2a = lo(5002);

  syscall(SYS_getppid); /* start of the counted part */
  char buf[64];
  for (int i = 0; i < 50; i++) {
    int pairs[3][2] = { { kp[0], kp[1] }, { kd[0], kd[1] }, { c, t } };
    for (int j = 0; j < 3; j++) {
      int x = pairs[j][0], y = pairs[j][1];
      CHECK(send(x, "abcd", 4, 0) == 4);
      CHECK(recv(y, buf, 4, MSG_WAITALL) == 4);
      CHECK(sendto(x, "abcd", 4, 0, NULL, 0) == 4);
      CHECK(recvfrom(y, buf, 4, MSG_WAITALL, NULL, NULL) == 4);
      struct iovec iov = { .iov_base = buf, .iov_len = 4 };
      struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
      CHECK(sendmsg(x, &m, 0) == 4);
      CHECK(recvmsg(y, &m, MSG_WAITALL) == 4);
    }
    CHECK(sendto(u1, "udp", 3, 0, (struct sockaddr *)&u2a, sizeof u2a) == 3);
    struct sockaddr_in src;
    socklen_t sl = sizeof src;
    CHECK(recvfrom(u2, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 3);
    CHECK(src.sin_port == htons(5001));
  }
  syscall(SYS_getppid); /* end */
}

static int new_kernel(void) { return socket(AF_UNIX, SOCK_DGRAM, 0); }

/* A kernel socket made by the raw syscall, which the library does not see. */
static int raw_kernel(void) { return syscall(SYS_socket, AF_UNIX, SOCK_DGRAM, 0); }

/* Makes kernel sockets with `make` until one gets the number `want` (a free one), keeping
   the others open meanwhile so that they fill any lower holes; closes them after. */
static int land(int want, int (*make)(void)) {
  int extra[64], n = 0, fd = -1;
  while (n < 64) {
    fd = make();
    CHECK(fd >= 0);
    if (fd == want) break;
    extra[n++] = fd;
  }
  for (int i = 0; i < n; i++) close(extra[i]);
  CHECK(fd == want);
  return fd;
}

/* Stack sockets made, used and closed, then kernel sockets that take (some of) their numbers,
   and the other way round: each works as what it now is. Other threads (the engine's) open
   and close fds too, so which number lands where is checked, not expected. */
#define N 16
static void both_ways(struct vdestack *s, int peer, int krecv, struct sockaddr_un *kname,
                      socklen_t klen) {
  int st[N], k[N], was_stack = 0, was_kernel = 0;
  for (int i = 0; i < N; i++) {
    st[i] = udp(s, 6100 + i);
    udp_round(st[i], 6100 + i, peer, 6000);
  }
  for (int i = 0; i < N; i++) CHECK(close(st[i]) == 0);
  for (int i = 0; i < N; i++) {
    k[i] = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(k[i] >= 0);
    for (int j = 0; j < N; j++) was_stack += k[i] == st[j];
    unix_round(k[i], krecv, kname, klen);
  }
  CHECK(was_stack > 0);
  for (int i = 0; i < N; i++) CHECK(close(k[i]) == 0);
  for (int i = 0; i < N; i++) {
    st[i] = udp(s, 6200 + i);
    for (int j = 0; j < N; j++) was_kernel += st[i] == k[j];
    udp_round(st[i], 6200 + i, peer, 6000);
  }
  CHECK(was_kernel > 0);
  for (int i = 0; i < N; i++) CHECK(close(st[i]) == 0);
}

static void reuse(struct vdestack *s) {
  int peer = udp(s, 6000);
  struct sockaddr_un kname;
  socklen_t klen;
  int krecv = unix_dgram(1, &kname, &klen);
  both_ways(s, peer, krecv, &kname, klen);

  /* fclose closes without calling close(), so it is interposed too: a socket the library
     does not see made on the number afterwards is not taken for the stack socket. */
  int u = udp(s, 6001);
  udp_round(u, 6001, peer, 6000);
  FILE *f = fdopen(u, "r+");
  CHECK(f != NULL);
  CHECK(fclose(f) == 0);
  int k = land(u, raw_kernel);
  unix_round(k, krecv, &kname, klen);

  /* dup2 of a kernel socket over a stack one, and of a stack socket over a kernel one. */
  u = udp(s, 6003);
  CHECK(dup2(k, u) == u);
  unix_round(u, krecv, &kname, klen);
  int u4 = udp(s, 6004);
  CHECK(dup2(u4, k) == k);
  udp_round(k, 6004, peer, 6000);
  int ksend = new_kernel();
  CHECK(dup3(ksend, k, O_CLOEXEC) == k);
  unix_round(k, krecv, &kname, klen);

  /* fcntl(F_DUPFD_CLOEXEC) and dup copy what the fd is. */
  int d = fcntl(u4, F_DUPFD_CLOEXEC, 100);
  CHECK(d >= 100);
  udp_round(d, 6004, peer, 6000);
  int d2 = dup(d);
  CHECK(d2 >= 0);
  udp_round(d2, 6004, peer, 6000);
  int d3 = fcntl(ksend, F_DUPFD, 200);
  CHECK(d3 >= 200);
  unix_round(d3, krecv, &kname, klen);
  close(d3);
  close(d2);
  close(d);
  close(ksend);
  close(u4);
  close(u);
  close(k);
  close(krecv);
  close(peer);
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  fprintf(stderr, "pid %d\n", (int)getpid());
  struct vdestack *s = vde_addstack(NULL, NULL);
  CHECK(s != NULL);
  if (strcmp(argv[1], "count") == 0)
    count(s);
  else if (strcmp(argv[1], "reuse") == 0)
    reuse(s);
  else
    CHECK(!"mode: count or reuse");
  vde_delstack(s);
  printf("ok\n");
  return 0;
}
