/* Datagram receives with short buffers and odd arguments, printed one line per call, for
 * tests/conformance_udp.rs to compare on the kernel and in a stack: socat's UDP-RECV way to
 * size a datagram (recvmsg MSG_PEEK|MSG_TRUNC into 1 byte), MSG_TRUNC in recv/recvfrom/
 * recvmsg, truncation without it, zero-length and NULL iovecs, 1024 and 1025 iovecs, short
 * and zero-length msg_name, payloads that start like the library's address header; over
 * unconnected and connected sockets of both families. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static unsigned char buf[70000];

static void res(const char *what, long r) {
  if (r < 0) printf("%s = -1 %s\n", what, strerrorname_np(errno));
  else printf("%s = %ld", what, r);
}

static void wait_in(int fd) {
  struct pollfd p = { .fd = fd, .events = POLLIN };
  poll(&p, 1, 2000);
}

static void show(long r, const unsigned char *b, long n, const struct msghdr *m) {
  if (r < 0) return;
  printf(" bytes=");
  for (long i = 0; i < n && i < 12; i++) printf("%02x", b[i]);
  if (m) printf(" flags=%x namelen=%u controllen=%zu", m->msg_flags, m->msg_namelen,
                m->msg_controllen);
  printf("\n");
}

static void send_one(int tx, const struct sockaddr *to, socklen_t tl, int len, int magic) {
  for (int i = 0; i < len; i++) buf[i] = (unsigned char)(i * 13 + 1);
  if (magic && len >= 4) memcpy(buf, "\xd7VDS", 4);
  long r = to ? sendto(tx, buf, len, 0, to, tl) : send(tx, buf, len, 0);
  if (r != len) { printf("send %d: %ld %s\n", len, r, strerror(errno)); exit(1); }
}

static void one_round(int rx, int tx, const struct sockaddr *to, socklen_t tl, int len, int magic) {
  unsigned char one[1] = { 0 }, small[40] = { 0 };
  struct sockaddr_storage from;
  struct iovec iov[2];
  struct msghdr m;
  char what[80];
  long r;

  send_one(tx, to, tl, len, magic);
  wait_in(rx);
  /* socat's UDP-RECV: peek with MSG_TRUNC into one byte to learn the size. */
  memset(&m, 0, sizeof m);
  iov[0].iov_base = one;
  iov[0].iov_len = 1;
  m.msg_iov = iov;
  m.msg_iovlen = 1;
  m.msg_name = &from;
  m.msg_namelen = sizeof from;
  r = recvmsg(rx, &m, MSG_PEEK | MSG_TRUNC);
  snprintf(what, sizeof what, "recvmsg(1, PEEK|TRUNC) len=%d", len);
  res(what, r);
  show(r, one, 1, &m);
  memset(small, 0, sizeof small);
  r = recv(rx, small, sizeof small, MSG_PEEK | MSG_TRUNC);
  res("recv(40, PEEK|TRUNC)", r);
  show(r, small, r < 40 ? r : 40, NULL);
  memset(small, 0, sizeof small);
  socklen_t fl = 4;
  r = recvfrom(rx, small, 3, MSG_PEEK, (void *)&from, &fl);
  res("recvfrom(3, PEEK, namelen 4)", r);
  printf(" namelen=%u", fl);
  show(r, small, r, NULL);
  /* Zero-length and NULL iovecs around a short one, name of length 0. */
  memset(small, 0, sizeof small);
  struct iovec v3[4] = { { NULL, 0 }, { small, 5 }, { buf + 60000, 0 }, { small + 10, 7 } };
  memset(&m, 0, sizeof m);
  m.msg_iov = v3;
  m.msg_iovlen = 4;
  m.msg_name = &from;
  m.msg_namelen = 0;
  r = recvmsg(rx, &m, MSG_PEEK);
  res("recvmsg([0,5,0,7], PEEK, namelen 0)", r);
  show(r, small, 17, &m);
  /* No iovec at all. */
  memset(&m, 0, sizeof m);
  r = recvmsg(rx, &m, MSG_PEEK | MSG_TRUNC);
  res("recvmsg(no iov, PEEK|TRUNC)", r);
  show(r, small, 0, &m);
  /* Too many iovecs, then exactly as many as allowed. */
  static struct iovec many[1025];
  static unsigned char bytes[1025];
  for (int i = 0; i < 1025; i++) { many[i].iov_base = bytes + i; many[i].iov_len = 1; }
  memset(&m, 0, sizeof m);
  m.msg_iov = many;
  m.msg_iovlen = 1025;
  r = recvmsg(rx, &m, MSG_PEEK);
  res("recvmsg(1025 iovecs)", r);
  show(r, bytes, 0, &m);
  m.msg_iovlen = 1024;
  r = recvmsg(rx, &m, MSG_PEEK);
  res("recvmsg(1024 iovecs, PEEK)", r);
  show(r, bytes, r < 1024 ? r : 1024, &m);
  /* Take it: with MSG_TRUNC into a short buffer, or whole. */
  memset(small, 0, sizeof small);
  if (len % 2) {
    r = recv(rx, small, 8, MSG_TRUNC);
    res("recv(8, TRUNC)", r);
    show(r, small, 8, NULL);
  } else {
    memset(&m, 0, sizeof m);
    iov[0].iov_base = buf;
    iov[0].iov_len = sizeof buf;
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    r = recvmsg(rx, &m, 0);
    res("recvmsg(whole)", r);
    show(r, buf, r, &m);
  }
  r = recv(rx, small, 1, MSG_DONTWAIT);
  res("recv(1, DONTWAIT) after", r);
  if (r >= 0) printf("\n");
}

static void family(int af) {
  struct sockaddr_storage a;
  socklen_t al;
  memset(&a, 0, sizeof a);
  if (af == AF_INET) {
    struct sockaddr_in *s = (void *)&a;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    al = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (void *)&a;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    al = sizeof *s;
  }
  int rx = socket(af, SOCK_DGRAM, 0), tx = socket(af, SOCK_DGRAM, 0);
  if (rx < 0 || tx < 0 || bind(rx, (void *)&a, al) || getsockname(rx, (void *)&a, &al)) {
    printf("setup: %s\n", strerror(errno));
    exit(1);
  }
  int lens[] = { 0, 1, 3, 24, 25, 100, 1500, 9000 };
  printf("%s unconnected\n", af == AF_INET ? "v4" : "v6");
  for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++)
    for (int magic = 0; magic < 2; magic++) one_round(rx, tx, (void *)&a, al, lens[i], magic);
  /* Lengths: a lone buffer's huge length is capped, a negative one is EINVAL; datagrams
   * larger than UDP carries are EMSGSIZE before any byte is read. */
  char what[64];
  size_t odd[] = { (size_t)1 << 46, (size_t)-1, 0x7ffff000 };
  for (unsigned i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    send_one(tx, (void *)&a, al, 11, 0);
    wait_in(rx);
    struct iovec v = { buf, odd[i] };
    struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1 };
    long r = recvmsg(rx, &m, MSG_DONTWAIT);
    snprintf(what, sizeof what, "recvmsg(len %zx)", odd[i]);
    res(what, r);
    show(r, buf, r, &m);
    recv(rx, buf, 1, MSG_DONTWAIT); /* the datagram the EINVAL left */
  }
  res("sendto(len -1)", sendto(tx, buf, (size_t)-1, 0, (void *)&a, al));
  printf("\n");
  struct iovec neg[2] = { { buf, 10 }, { buf, (size_t)-1 } };
  struct msghdr nm = { .msg_name = &a, .msg_namelen = al, .msg_iov = neg, .msg_iovlen = 2 };
  res("sendmsg([10,-1])", sendmsg(tx, &nm, 0));
  printf("\n");
  res("sendto(70000)", sendto(tx, buf, 70000, 0, (void *)&a, al));
  printf("\n");
  long big = sendto(tx, buf, 65508, 0, (void *)&a, al);
  res("sendto(65508)", big); /* IPv4: EMSGSIZE; IPv6 carries it */
  printf("\n");
  if (big > 0) { /* the stack's engine loses IPv6 datagrams past 65,488 bytes: not compared */
    wait_in(rx);
    recv(rx, buf, sizeof buf, MSG_DONTWAIT);
  }
  int most = af == AF_INET ? 65507 : 65488;
  snprintf(what, sizeof what, "sendto(%d)", most);
  res(what, sendto(tx, buf, most, 0, (void *)&a, al));
  printf("\n");
  wait_in(rx);
  res("recv(largest datagram)", recv(rx, buf, sizeof buf, MSG_DONTWAIT));
  printf("\n");
  /* Connected both ways: datagrams without the address header. */
  struct sockaddr_storage b;
  socklen_t bl = sizeof b;
  if (connect(tx, (void *)&a, al) || getsockname(tx, (void *)&b, &bl) ||
      connect(rx, (void *)&b, bl)) {
    printf("connect: %s\n", strerror(errno));
    exit(1);
  }
  printf("%s connected\n", af == AF_INET ? "v4" : "v6");
  for (unsigned i = 0; i < sizeof lens / sizeof lens[0]; i++)
    for (int magic = 0; magic < 2; magic++) one_round(rx, tx, NULL, 0, lens[i], magic);
  close(rx);
  close(tx);
}

/* Shut before connect: Linux says ENOTCONN yet records the shutdown, and connect goes on;
 * a socket shut for reading answers receives at once (EAGAIN, or 0 when it would block). The
 * library's connect once read a shut pair's endless 0-byte ends, forever. */
static void shut_then_connect(int af, int how) {
  struct sockaddr_storage a, b;
  socklen_t al = sizeof a, bl = sizeof b;
  memset(&a, 0, sizeof a);
  if (af == AF_INET) {
    struct sockaddr_in *s = (void *)&a;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    al = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (void *)&a;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    al = sizeof *s;
  }
  memcpy(&b, &a, sizeof a);
  bl = al;
  int rx = socket(af, SOCK_DGRAM, 0), tx = socket(af, SOCK_DGRAM, 0);
  if (rx < 0 || tx < 0 || bind(rx, (void *)&a, al) || getsockname(rx, (void *)&a, &al) ||
      bind(tx, (void *)&b, bl) || getsockname(tx, (void *)&b, &bl)) {
    printf("setup: %s\n", strerror(errno));
    exit(1);
  }
  printf("%s shutdown %d before connect\n", af == AF_INET ? "v4" : "v6", how);
  send_one(tx, (void *)&a, al, 5, 0); /* one waits as rx connects */
  wait_in(rx);
  res("shutdown(unconnected)", shutdown(rx, how));
  printf("\n");
  res("connect(peer)", connect(rx, (void *)&b, bl));
  printf("\n");
  long r = recv(rx, buf, sizeof buf, MSG_DONTWAIT);
  res("recv(DONTWAIT) queued", r);
  show(r, buf, r, NULL);
  r = recv(rx, buf, sizeof buf, MSG_DONTWAIT);
  res("recv(DONTWAIT) empty", r);
  show(r, buf, r, NULL);
  if (how != SHUT_WR) {
    r = recv(rx, buf, sizeof buf, 0);
    res("recv() shut", r);
    show(r, buf, r, NULL);
  }
  r = send(rx, "abc", 3, MSG_NOSIGNAL);
  res("send(3)", r);
  show(r, buf, 0, NULL);
  close(rx);
  close(tx);
}

/* sendto on an unbound socket binds it, inside the call: getsockname shows the port at once
 * and bind says EINVAL; a socket closed right after its sendto still sends it. (The engine
 * bound such a socket only as the datagram came out of its pair, and dropped it at close.) */
static void autobind(int af) {
  struct sockaddr_storage a, n;
  socklen_t al = sizeof a, nl;
  memset(&a, 0, sizeof a);
  if (af == AF_INET) {
    struct sockaddr_in *s = (void *)&a;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    al = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (void *)&a;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    al = sizeof *s;
  }
  int rx = socket(af, SOCK_DGRAM, 0);
  if (rx < 0 || bind(rx, (void *)&a, al) || getsockname(rx, (void *)&a, &al)) {
    printf("setup: %s\n", strerror(errno));
    exit(1);
  }
  printf("%s autobind\n", af == AF_INET ? "v4" : "v6");
  for (int i = 0; i < 10; i++) {
    int tx = socket(af, SOCK_DGRAM, 0);
    send_one(tx, (void *)&a, al, 10 + i, 0);
    nl = sizeof n;
    res("getsockname after sendto", getsockname(tx, (void *)&n, &nl));
    printf(" port %s\n", ((struct sockaddr_in *)&n)->sin_port ? "set" : "0");
    res("bind after sendto", bind(tx, (void *)&a, al));
    printf("\n");
    close(tx);
    wait_in(rx);
    recv(rx, buf, sizeof buf, MSG_DONTWAIT);
  }
  int got = 0;
  for (int i = 0; i < 20; i++) {
    int tx = socket(af, SOCK_DGRAM, 0);
    send_one(tx, (void *)&a, al, 30 + i, 0);
    close(tx);
    wait_in(rx);
    if (recv(rx, buf, sizeof buf, MSG_DONTWAIT) == 30 + i) got++;
  }
  printf("sent and closed at once: %d of 20 arrived\n", got);
  close(rx);
}

/* connect(AF_UNSPEC) dissolves a UDP association: no peer, and a port bind did not name
 * goes back (getsockname shows port 0); the socket then hears and sends to anyone. */
static void disconnect(int af, int bound) {
  struct sockaddr_storage a, n;
  socklen_t al = sizeof a, nl;
  memset(&a, 0, sizeof a);
  if (af == AF_INET) {
    struct sockaddr_in *s = (void *)&a;
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    al = sizeof *s;
  } else {
    struct sockaddr_in6 *s = (void *)&a;
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    al = sizeof *s;
  }
  struct sockaddr_storage any = a;
  ((struct sockaddr_in *)&any)->sin_port = 0;
  int rx = socket(af, SOCK_DGRAM, 0), tx = socket(af, SOCK_DGRAM, 0);
  if (rx < 0 || tx < 0 || bind(rx, (void *)&a, al) || getsockname(rx, (void *)&a, &al) ||
      (bound && bind(tx, (void *)&any, al))) {
    printf("setup: %s\n", strerror(errno));
    exit(1);
  }
  printf("%s disconnect, %s\n", af == AF_INET ? "v4" : "v6", bound ? "bound" : "autobound");
  res("connect", connect(tx, (void *)&a, al));
  printf("\n");
  struct sockaddr unspec = { .sa_family = AF_UNSPEC };
  res("connect(AF_UNSPEC)", connect(tx, &unspec, sizeof unspec));
  printf("\n");
  nl = sizeof n;
  res("getpeername", getpeername(tx, (void *)&n, &nl));
  printf("\n");
  nl = sizeof n;
  res("getsockname", getsockname(tx, (void *)&n, &nl));
  printf(" port %s\n", ((struct sockaddr_in *)&n)->sin_port ? "set" : "0");
  send_one(tx, (void *)&a, al, 7, 0);
  wait_in(rx);
  long r = recv(rx, buf, sizeof buf, MSG_DONTWAIT);
  res("recv", r);
  show(r, buf, r, NULL);
  close(rx);
  close(tx);
}

int main(void) {
  family(AF_INET);
  family(AF_INET6);
  autobind(AF_INET);
  autobind(AF_INET6);
  for (int bound = 0; bound < 2; bound++) {
    disconnect(AF_INET, bound);
    disconnect(AF_INET6, bound);
  }
  for (int how = SHUT_RD; how <= SHUT_RDWR; how++) {
    shut_then_connect(AF_INET, how);
    shut_then_connect(AF_INET6, how);
  }
  return 0;
}
