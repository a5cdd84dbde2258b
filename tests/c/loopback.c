#define _GNU_SOURCE
/* A C program of libvdestack's API: a loopback-only stack (vde_addstack(NULL, NULL)), the
   socket calls on its fds, the default stack, fork, and bad arguments. It is built against
   Debian's libvdestack and run on ours by LD_LIBRARY_PATH alone. Prints "ok" when every check
   held; otherwise names the first that failed and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <vdestack.h>

#include "check.h"

static int opt(int fd, int level, int name) {
  int v = -1; socklen_t l = sizeof v;
  CHECK(getsockopt(fd, level, name, &v, &l) == 0 && l == sizeof v);
  return v;
}

int main(void) {
  struct vdestack *s = vde_addstack(NULL, NULL);
  CHECK(s != NULL);
  CHECK(vde_stackcmd(s, "/bin/ip link set lo up") == 0);
  CHECK(vde_stackcmd(s, "/bin/ip addr add 10.0.0.1/24 dev vde0") == 1); /* no vde0 here */

  /* TCP on the loopback, addresses and options. */
  int l = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(l >= 0);
  struct sockaddr_in a = lo(5000);
  CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(l, 16) == 0);
  CHECK(opt(l, SOL_SOCKET, SO_DOMAIN) == AF_INET);
  CHECK(opt(l, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
  CHECK(opt(l, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
  int c = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
  struct sockaddr_in p; socklen_t pl = sizeof p;
  int x = accept4(l, (struct sockaddr *)&p, &pl, SOCK_CLOEXEC);
  CHECK(x >= 0 && pl == sizeof p && p.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
  struct sockaddr_in me; socklen_t ml = sizeof me;
  CHECK(getsockname(c, (struct sockaddr *)&me, &ml) == 0 && me.sin_port == p.sin_port);
  int one = 1;
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  CHECK(opt(c, IPPROTO_TCP, TCP_NODELAY) == 1);
  struct tcp_info ti; socklen_t til = sizeof ti;
  memset(&ti, 0xff, sizeof ti);
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &til) == 0 && til == sizeof ti);
  CHECK(ti.tcpi_state == TCP_ESTABLISHED && ti.tcpi_snd_mss > 0 && ti.tcpi_total_retrans == 0);
  CHECK(send(c, "hello", 5, 0) == 5);
  char buf[64] = {0};
  CHECK(recv(x, buf, 5, MSG_WAITALL) == 5 && strcmp(buf, "hello") == 0);
  /* accept on a connected socket: EINVAL at once, its data untouched. A listener's
     SO_RCVLOWAT reads 1 and setting it is accepted (it means nothing there). */
  CHECK(send(c, "keep", 4, 0) == 4);
  CHECK(accept(x, NULL, NULL) == -1 && errno == EINVAL);
  CHECK(recv(x, buf, 4, MSG_WAITALL) == 4 && memcmp(buf, "keep", 4) == 0);
  CHECK(opt(l, SOL_SOCKET, SO_RCVLOWAT) == 1);
  int lowat = 8;
  CHECK(setsockopt(l, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) == 0);
  CHECK(shutdown(c, SHUT_WR) == 0);
  CHECK(read(x, buf, sizeof buf) == 0); /* EOF */
  CHECK(write(x, "back", 4) == 4);      /* half-closed: still carries data the other way */
  CHECK(read(c, buf, sizeof buf) == 4 && memcmp(buf, "back", 4) == 0);
  close(x); close(c);

  /* Refused, and a nonblocking connect reported through poll + SO_ERROR. */
  int r = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in closed = lo(5999);
  CHECK(connect(r, (struct sockaddr *)&closed, sizeof closed) == -1 && errno == ECONNREFUSED);
  int nb = vde_msocket(s, AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(connect(nb, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
  struct pollfd pf = { .fd = nb, .events = POLLOUT };
  CHECK(poll(&pf, 1, 5000) == 1);
  CHECK(opt(nb, SOL_SOCKET, SO_ERROR) == 0);
  x = accept(l, NULL, NULL);
  CHECK(x >= 0);
  close(x); close(nb); close(r);

  /* UDP: source address of each datagram. */
  int u = vde_msocket(s, AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in ua = lo(6000);
  CHECK(bind(u, (struct sockaddr *)&ua, sizeof ua) == 0);
  int u2 = vde_msocket(s, AF_INET, SOCK_DGRAM, 0);
  CHECK(sendto(u2, "dgram", 5, 0, (struct sockaddr *)&ua, sizeof ua) == 5);
  struct sockaddr_in from; socklen_t fl = sizeof from;
  CHECK(recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl) == 5);
  CHECK(fl == sizeof from && from.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && from.sin_port != 0);
  struct sockaddr_in u2a; socklen_t u2l = sizeof u2a;
  CHECK(getsockname(u2, (struct sockaddr *)&u2a, &u2l) == 0 && u2a.sin_port == from.sin_port);
  CHECK(opt(u, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM);
  close(u); close(u2);

  /* fork: the child accepts and serves a connection of the parent's. */
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int k = accept(l, NULL, NULL);
    if (k < 0 || write(k, "child", 5) != 5) _exit(2);
    close(k);
    _exit(0);
  }
  c = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
  memset(buf, 0, sizeof buf);
  CHECK(recv(c, buf, sizeof buf, MSG_WAITALL) == 5 && memcmp(buf, "child", 5) == 0);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(c);

  /* The default stack: socket() makes stack sockets, NULL gives the kernel's back. */
  vde_default_stack(s);
  int d = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(d >= 0);
  CHECK(connect(d, (struct sockaddr *)&a, sizeof a) == 0); /* reaches the stack's listener */
  close(d);
  int un = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(un >= 0 && opt(un, SOL_SOCKET, SO_DOMAIN) == AF_UNIX);
  close(un);
  vde_default_stack(NULL);
  int k = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(k >= 0);
  struct sockaddr_in kn; socklen_t knl = sizeof kn;
  CHECK(getsockname(k, (struct sockaddr *)&kn, &knl) == 0 && kn.sin_family == AF_INET);
  /* A kernel fd's errors are libc's, unchanged. */
  CHECK(listen(-1, 1) == -1 && errno == EBADF);
  int devnull = open("/dev/null", O_RDONLY);
  CHECK(bind(devnull, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENOTSOCK);
  close(devnull); close(k);

  /* Bad arguments: -1/NULL with the errno a kernel would give, no crash. */
  CHECK(vde_msocket(NULL, AF_INET, SOCK_STREAM, 0) == -1 && errno == EINVAL);
  CHECK(vde_msocket((struct vdestack *)&a, AF_INET, SOCK_STREAM, 0) == -1 && errno == EINVAL);
  CHECK(vde_msocket(s, AF_PACKET, SOCK_STREAM, 0) == -1 && errno == EAFNOSUPPORT);
  CHECK(vde_stackcmd(NULL, "/bin/ip link") == -1 && errno == EINVAL);
  CHECK(vde_stackcmd(s, NULL) == -1 && errno == EINVAL);
  CHECK(vde_stackcmd(s, "/bin/frob") == 127);
  CHECK(bind(l, NULL, sizeof a) == -1 && errno == EFAULT);
  CHECK(bind(l, (struct sockaddr *)&a, 3) == -1 && errno == EINVAL);
  vde_delstack(NULL);
  vde_delstack((struct vdestack *)&a);

  close(l);
  vde_delstack(s);
  puts("ok");
  return 0;
}
