/* Differential conformance driver: seeded random sequences of socket calls on loopback,
 * each call's result printed as a canonical trace line. tests/conformance.rs runs it once on
 * the kernel and once under `vdestack run` and compares the traces.
 *
 *   conform SEED COUNT [FIRST [all]]   sequences FIRST..FIRST+COUNT-1; sequence i is seeded
 *                                 with mix(SEED, i), so `conform SEED 1 i` replays it alone.
 *
 * Without "all", calls whose answer depends on a socket's state in a way the stack's
 * library cannot know without asking its engine (named by design in
 * tests/conformance/known.rs) are not made: send/recv on a TCP socket that is not
 * connected, send without an address on a UDP socket that is not connected. Nor are those
 * that start a difference which then runs through the rest of a sequence and which the
 * engine has yet to match (named too): shutdown(SHUT_RD) of a listener, connect(AF_UNSPEC)
 * and connecting a UDP socket to a port nothing listens on (ICMP errors).
 *
 * A small model of what each socket should hold (bytes or datagrams waiting, connections
 * queued, EOF) decides which calls may block: a blocking call is made only when the model
 * says it completes; otherwise MSG_DONTWAIT is added. Before a receive the model expects to
 * find data, the driver waits (up to 2 s, untraced) until the data is there, so that the
 * stack's asynchronous delivery does not show as a difference. Ports are printed by name (the
 * socket that owns them), so ephemeral numbers do not matter. A watchdog ends a sequence that
 * hangs with "HANG". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXS 8     /* fds per sequence */
#define MAXO 40    /* sockets per sequence */
#define MAXQ 16    /* datagrams or connections waiting, per socket */
#define STREAM_ROOM 16384 /* bytes a connection may hold unread */

enum { NEW, LISTEN, CONNECTING, CONNECTED };

struct obj {                 /* a socket, which fds refer to */
  int type, nonblock, state, port, peer, refs, dead;
  int bound, backlog, nq, q[MAXQ]; /* listener: connectors waiting to be accepted */
  long pending;              /* stream: bytes readable */
  long early;                /* stream: bytes sent before the peer was accepted */
  int eof, reset, rdshut, wrshut, rcvtimeo;
  int dq[MAXQ], dqn;         /* datagram: lengths waiting */
};

static struct obj o[MAXO];
static int no;
static int fds[MAXS], fobj[MAXS], nf;
static int v6, dead_port, all;
static double settle_left; /* seconds a sequence may still wait for the model's data */
static uint64_t rng;
static char out[1 << 20];
static size_t outn;
static unsigned char rbuf[1 << 16];
static unsigned char sbuf[1 << 16];

static void emit(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out + outn, sizeof out - outn, fmt, ap);
  va_end(ap);
  if (n > 0 && outn + n < sizeof out) outn += n;
}

static void flush_out(void) {
  size_t off = 0;
  while (off < outn) {
    ssize_t w = write(1, out + off, outn - off);
    if (w <= 0) break;
    off += w;
  }
  outn = 0;
}

static void on_alarm(int sig) {
  (void)sig;
  emit(" HANG\n");
  flush_out();
  _exit(3);
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
static int pick(int n) { rng = mix(rng); return (int)(rng % (uint64_t)n); }
static int chance(int pct) { return pick(100) < pct; }

static void res(long r) {
  if (r < 0) emit(" = -1 %s", strerrorname_np(errno));
  else emit(" = %ld", r);
}

/* The result of a call that returns an fd: which number it is does not matter. */
static void fdres(int r) {
  if (r < 0) res(r);
  else emit(" = fd");
}

static const char *portname(int p, char *b) {
  if (p == 0) return "0";
  for (int i = 0; i < no; i++) /* first: the kernel may hand the dead port out again */
    if (o[i].port == p) { sprintf(b, "P%d", i); return b; }
  if (p == dead_port) return "DEAD";
  return "eph";
}

static void paddr(const struct sockaddr_storage *ss, socklen_t len) {
  char ip[64], pb[16];
  if (len == 0) { emit(" name=none"); return; }
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ss;
    uint32_t h = ntohl(a->sin_addr.s_addr);
    if (h == INADDR_LOOPBACK) strcpy(ip, "lo");
    else if (h == 0) strcpy(ip, "any");
    else inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    emit(" name=4:%s:%s/%u", ip, portname(ntohs(a->sin_port), pb), len);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)ss;
    if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) strcpy(ip, "lo");
    else if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr)) strcpy(ip, "any");
    else inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    emit(" name=6:%s:%s/%u", ip, portname(ntohs(a->sin6_port), pb), len);
  } else {
    emit(" name=fam%d/%u", ss->ss_family, len);
  }
}

static socklen_t mkaddr(struct sockaddr_storage *ss, int any, int port) {
  memset(ss, 0, sizeof *ss);
  if (v6) {
    struct sockaddr_in6 *a = (void *)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    a->sin6_addr = any ? in6addr_any : in6addr_loopback;
    return sizeof *a;
  }
  struct sockaddr_in *a = (void *)ss;
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  a->sin_addr.s_addr = htonl(any ? 0 : INADDR_LOOPBACK);
  return sizeof *a;
}

static uint32_t fnv(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static void learn_port(int s) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof ss;
  if (getsockname(fds[s], (void *)&ss, &l) == 0)
    o[fobj[s]].port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* Waits (untraced, up to 1 s, 3 s a sequence) until what the model expects of fd is there;
 * says whether it came. The kernel's loopback needs no wait: there, not coming means the
 * model is wrong, and the call's line says "unsettled" in both traces. */
static int settle(int fd, struct obj *b) {
  double start = now(), end = start + (settle_left < 1 ? settle_left : 1);
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
    poll(&p, 1, 0);
    int n = 0;
    if (b->state == LISTEN) { if (p.revents & POLLIN) return 1; }
    else if (b->type == SOCK_DGRAM) { if (p.revents & POLLIN) return 1; }
    else if (b->reset) { if (p.revents & (POLLIN | POLLERR | POLLHUP)) return 1; }
    else if (ioctl(fd, FIONREAD, &n) == 0 && n >= b->pending &&
             (!b->eof || (p.revents & POLLRDHUP))) return 1;
    if (now() >= end) break;
    struct timespec ts = { 0, 200000 };
    nanosleep(&ts, NULL);
  }
  settle_left -= now() - start;
  return 0;
}

static int newslot(int fd, int ob) {
  fds[nf] = fd;
  fobj[nf] = ob;
  o[ob].refs++;
  return nf++;
}

static int newobj(int type, int nonblock) {
  struct obj *b = &o[no];
  memset(b, 0, sizeof *b);
  b->type = type;
  b->nonblock = nonblock;
  b->peer = -1;
  return no++;
}

static void op_socket(void) {
  if (nf == MAXS || no == MAXO) return;
  int type = chance(55) ? SOCK_STREAM : SOCK_DGRAM, nb = chance(25);
  int fd = socket(v6 ? AF_INET6 : AF_INET, type | (nb ? SOCK_NONBLOCK : 0), 0);
  emit("socket(%s%s)", type == SOCK_STREAM ? "STREAM" : "DGRAM", nb ? "|NONBLOCK" : "");
  fdres(fd);
  if (fd >= 0) emit(" s%d", newslot(fd, newobj(type, nb)));
}

static void op_bind(int s) {
  struct sockaddr_storage ss;
  int port = 0;
  if (chance(20) && no > 0) port = o[pick(no)].port;
  int any = chance(20);
  socklen_t l = mkaddr(&ss, any, port);
  char pb[16];
  emit("bind(s%d,%s,%s)", s, any ? "any" : "lo", portname(port, pb));
  int r = bind(fds[s], (void *)&ss, l);
  res(r);
  if (r == 0) { learn_port(s); o[fobj[s]].bound = 1; }
}

static void op_listen(int s) {
  int bl = 1 + pick(4);
  emit("listen(s%d,%d)", s, bl);
  int r = listen(fds[s], bl);
  res(r);
  struct obj *b = &o[fobj[s]];
  if (r == 0) {
    if (b->state != LISTEN) b->nq = 0;
    b->state = LISTEN;
    b->backlog = bl;
    learn_port(s);
  }
}

/* A listener that can take one more connection, or -1. */
static int open_listener(void) {
  int c[MAXO], n = 0;
  for (int i = 0; i < no; i++)
    if (!o[i].dead && o[i].state == LISTEN && o[i].nq < o[i].backlog) c[n++] = i;
  return n ? c[pick(n)] : -1;
}

static int dgram_target(void) {
  int c[MAXO], n = 0;
  for (int i = 0; i < no; i++)
    if (!o[i].dead && o[i].type == SOCK_DGRAM && o[i].port) c[n++] = i;
  return n ? c[pick(n)] : -1;
}

static void op_connect(int s) {
  struct obj *b = &o[fobj[s]];
  struct sockaddr_storage ss;
  int t = -1, port = dead_port;
  if (b->type == SOCK_STREAM) {
    if (b->state == CONNECTING) return; /* its outcome is timing: see op_waitconn */
    if (!chance(15)) t = open_listener();
  } else if (!chance(15) || !all) {
    t = dgram_target();
    if (t < 0 && !all) return;
  }
  if (t >= 0) port = o[t].port;
  socklen_t l = mkaddr(&ss, 0, port);
  if (b->type == SOCK_DGRAM && chance(10) && all) {
    ss.ss_family = AF_UNSPEC;
    t = -2;
  }
  char pb[16];
  emit("connect(s%d,%s)", s, t == -2 ? "UNSPEC" : portname(port, pb));
  int r = connect(fds[s], (void *)&ss, l);
  res(r);
  int inprog = r < 0 && errno == EINPROGRESS;
  if (r == 0 || inprog) {
    learn_port(s);
    if (b->type == SOCK_DGRAM) {
      b->peer = t >= 0 ? t : -1;
      b->state = t == -2 ? NEW : CONNECTED;
    } else if (inprog) {
      b->state = CONNECTING;
      if (t >= 0) o[t].q[o[t].nq++] = fobj[s];
    } else if (t >= 0) {
      b->state = CONNECTED;
      o[t].q[o[t].nq++] = fobj[s];
    }
  }
}

static void op_waitconn(int s) {
  struct pollfd p = { .fd = fds[s], .events = POLLOUT };
  int r = poll(&p, 1, 2000);
  int err = -1;
  socklen_t l = sizeof err;
  getsockopt(fds[s], SOL_SOCKET, SO_ERROR, &err, &l);
  emit("waitconn(s%d) = %d%s so_error=%s", s, r, (p.revents & POLLOUT) ? " OUT" : "",
       err ? strerrorname_np(err) : "0");
  o[fobj[s]].state = err == 0 ? CONNECTED : NEW;
}

static void op_accept(int s) {
  struct obj *b = &o[fobj[s]];
  int waiting = b->state == LISTEN && b->nq > 0;
  if (!waiting && !b->nonblock && b->state == LISTEN) return; /* would block */
  if (nf == MAXS || no == MAXO) return;
  if (waiting && !settle(fds[s], b) && !b->nonblock) {
    emit("accept4(s%d) notready", s);
    return;
  }
  struct sockaddr_storage ss;
  socklen_t l = chance(10) ? 4 : sizeof ss;
  int nb = chance(30);
  emit("accept4(s%d,len=%u%s)", s, l, nb ? ",NONBLOCK" : "");
  int fd = accept4(fds[s], (void *)&ss, &l, nb ? SOCK_NONBLOCK : 0);
  fdres(fd);
  if (fd < 0) return;
  if (l >= sizeof(struct sockaddr_in)) paddr(&ss, l);
  else emit(" namelen=%u", l);
  int c = b->nq ? b->q[0] : -1;
  if (b->nq) memmove(b->q, b->q + 1, --b->nq * sizeof b->q[0]);
  int n = newobj(SOCK_STREAM, nb);
  o[n].state = CONNECTED;
  o[n].peer = c;
  o[n].port = -1;
  if (c >= 0) {
    o[c].peer = n;
    o[n].pending = o[c].early;
    o[n].eof = o[c].dead || o[c].wrshut;
  }
  emit(" s%d", newslot(fd, n));
}

/* Fills sbuf with the next n bytes to send; sometimes starts with the stack's header
 * magic, which a datagram's payload may carry. */
static unsigned fillk; /* where the byte pattern is: each sequence starts it afresh */
static void fill(int n) {
  unsigned k = fillk;
  for (int i = 0; i < n; i++) sbuf[i] = (unsigned char)(k++ * 7 + 3);
  fillk = k;
  if (n >= 4 && chance(5)) memcpy(sbuf, "\xd7VDS", 4);
}

/* Splits len bytes of base into 1..6 iovecs, some empty. */
static int shape(struct iovec *iov, unsigned char *base, size_t len, int gaps, char *desc) {
  int k = 1 + pick(6), n = 0;
  size_t off = 0, at = 0;
  desc[0] = 0;
  for (int i = 0; i < k; i++) {
    size_t part = i == k - 1 ? len - off : (chance(25) ? 0 : (size_t)pick(len - off + 1));
    iov[n].iov_base = part == 0 && chance(30) ? NULL : base + at;
    iov[n].iov_len = part;
    sprintf(desc + strlen(desc), "%s%zu", n ? "," : "", part);
    n++;
    off += part;
    at += part + (gaps ? 8 : 0);
  }
  return n;
}

static const char *flagstr(int f) {
  static char b[64];
  b[0] = 0;
  if (f & MSG_PEEK) strcat(b, "|PEEK");
  if (f & MSG_TRUNC) strcat(b, "|TRUNC");
  if (f & MSG_WAITALL) strcat(b, "|WAITALL");
  if (f & MSG_DONTWAIT) strcat(b, "|DONTWAIT");
  if (f & MSG_NOSIGNAL) strcat(b, "|NOSIGNAL");
  if (f & MSG_CTRUNC) strcat(b, "|CTRUNC");
  if (f & MSG_EOR) strcat(b, "|EOR");
  return b[0] ? b + 1 : "0";
}

static void op_send(int s) {
  struct obj *b = &o[fobj[s]];
  if (b->state == CONNECTING || b->state == LISTEN) return;
  int stream = b->type == SOCK_STREAM, t = -1;
  if (!all && stream && b->state != CONNECTED) return;
  int len = chance(10) ? 0 : 1 + pick(chance(20) ? 4000 : 300);
  int flags = MSG_NOSIGNAL | (chance(30) ? MSG_DONTWAIT : 0);
  struct obj *p = b->peer >= 0 ? &o[b->peer] : NULL;
  if (stream && (p ? p->pending : b->early) + len > STREAM_ROOM) return;
  if (!stream && p && p->dqn >= MAXQ) return;
  int how = pick(3); /* send, sendto, sendmsg */
  struct sockaddr_storage ss;
  socklen_t al = 0;
  if (!stream && how > 0 && chance(70)) {
    t = chance(15) ? -1 : dgram_target();
    if (t >= 0 && o[t].dqn >= MAXQ) return;
    al = mkaddr(&ss, 0, t >= 0 ? o[t].port : dead_port);
  }
  if (!all && !stream && !al && b->state != CONNECTED) return;
  fill(len);
  char pb[16], desc[64] = "";
  long r;
  const char *to = al ? portname(t >= 0 ? o[t].port : dead_port, pb) : "-";
  if (how == 0) {
    emit("send(s%d,%d,%s)", s, len, flagstr(flags));
    r = send(fds[s], sbuf, len, flags);
  } else if (how == 1) {
    emit("sendto(s%d,%d,%s,%s)", s, len, flagstr(flags), to);
    r = sendto(fds[s], sbuf, len, flags, al ? (void *)&ss : NULL, al);
  } else {
    struct iovec iov[8];
    struct msghdr m = { .msg_name = al ? &ss : NULL, .msg_namelen = al };
    m.msg_iov = iov;
    m.msg_iovlen = shape(iov, sbuf, len, 0, desc);
    if (len == 0 && chance(30)) { m.msg_iov = NULL; m.msg_iovlen = 0; strcpy(desc, "NULL"); }
    emit("sendmsg(s%d,[%s],%s,%s)", s, desc, flagstr(flags), to);
    r = sendmsg(fds[s], &m, flags);
  }
  res(r);
  if (r < 0) return;
  if (stream) {
    if (p) p->pending += r;
    else if (b->state == CONNECTED) b->early += r;
    return;
  }
  if (!al) t = b->peer;
  if (t >= 0 && !o[t].dead && o[t].port &&
      (o[t].state != CONNECTED || o[t].peer == fobj[s]) && o[t].dqn < MAXQ)
    o[t].dq[o[t].dqn++] = r;
}

static void op_recv(int s) {
  struct obj *b = &o[fobj[s]];
  if (b->state == CONNECTING) return;
  int stream = b->type == SOCK_STREAM;
  if (!all && stream && b->state != CONNECTED && !b->rdshut) return;
  int flags = (chance(25) ? MSG_PEEK : 0) | (chance(20) ? MSG_TRUNC : 0) |
              (chance(15) ? MSG_WAITALL : 0) | (chance(30) ? MSG_DONTWAIT : 0);
  int cap;
  switch (pick(5)) {
  case 0: cap = 0; break;
  case 1: cap = 1; break;
  case 2: cap = 1 + pick(64); break;
  case 3: cap = stream ? (int)b->pending : (b->dqn ? b->dq[0] : 100); break;
  default: cap = 1 + pick(5000); break;
  }
  int ready = stream ? (b->pending > 0 || b->eof || b->reset || b->rdshut)
                     : b->dqn > 0;
  if (b->state == LISTEN) ready = 0;
  int full = stream ? (b->pending >= cap || b->eof || b->reset || b->rdshut) : 1;
  int blocks = !(flags & MSG_DONTWAIT) && !b->nonblock;
  if (blocks && cap == 0 && stream) ready = 0;
  if (blocks && !(ready && ((flags & MSG_WAITALL) ? full : 1)) && !b->rcvtimeo)
    flags |= MSG_DONTWAIT;
  int unsettled = ready && !settle(fds[s], b);
  if (unsettled) flags |= MSG_DONTWAIT;
  memset(rbuf, 0xa5, sizeof rbuf);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t al = chance(10) ? (socklen_t)pick(20) : sizeof ss;
  int how = pick(3);
  long r;
  if (how == 0) {
    emit("recv(s%d,%d,%s)", s, cap, flagstr(flags));
    r = recv(fds[s], rbuf, cap, flags);
    res(r);
  } else if (how == 1) {
    int noaddr = chance(20);
    emit("recvfrom(s%d,%d,%s,%s)", s, cap, flagstr(flags), noaddr ? "NULL" : "addr");
    r = recvfrom(fds[s], rbuf, cap, flags, noaddr ? NULL : (void *)&ss, noaddr ? NULL : &al);
    res(r);
    if (r >= 0 && !noaddr) paddr(&ss, al);
  } else {
    struct iovec iov[8];
    char desc[64];
    struct msghdr m = { .msg_name = chance(20) ? NULL : &ss, .msg_namelen = al };
    m.msg_iov = iov;
    m.msg_iovlen = shape(iov, rbuf, cap, 1, desc);
    if (cap == 0 && chance(30)) { m.msg_iov = NULL; m.msg_iovlen = 0; strcpy(desc, "NULL"); }
    emit("recvmsg(s%d,[%s],%s%s)", s, desc, flagstr(flags), m.msg_name ? "" : ",noname");
    r = recvmsg(fds[s], &m, flags);
    res(r);
    if (r >= 0) {
      emit(" flags=%s", flagstr(m.msg_flags));
      if (m.msg_name) paddr(&ss, m.msg_namelen);
      else emit(" namelen=%u", m.msg_namelen);
    }
  }
  if (unsettled) emit(" unsettled");
  if (r < 0) return;
  emit(" data=%08x", fnv(rbuf, cap + 8 * 8 + 64));
  if (flags & MSG_PEEK) return;
  if (stream) {
    b->pending -= r > b->pending ? b->pending : r;
  } else if (b->dqn) {
    memmove(b->dq, b->dq + 1, --b->dqn * sizeof b->dq[0]);
  }
}

static void op_shutdown(int s) {
  int how = pick(3);
  static const char *hs[] = { "RD", "WR", "RDWR" };
  if (!all && o[fobj[s]].state == LISTEN && how != SHUT_WR) return;
  emit("shutdown(s%d,%s)", s, hs[how]);
  int r = shutdown(fds[s], how);
  res(r);
  struct obj *b = &o[fobj[s]];
  if (r == 0 && b->type == SOCK_STREAM) {
    if (how != SHUT_WR) b->rdshut = 1;
    if (how != SHUT_RD) { b->wrshut = 1; if (b->peer >= 0) o[b->peer].eof = 1; }
  }
}

static void drop_slot(int s) {
  struct obj *b = &o[fobj[s]];
  memmove(fds + s, fds + s + 1, (nf - s - 1) * sizeof fds[0]);
  memmove(fobj + s, fobj + s + 1, (nf - s - 1) * sizeof fobj[0]);
  nf--;
  if (--b->refs > 0) return;
  b->dead = 1;
  if (b->peer >= 0 && b->type == SOCK_STREAM) {
    o[b->peer].eof = 1;
    if (b->pending > 0 || b->state == CONNECTING) o[b->peer].reset = 1;
  }
  for (int i = 0; i < b->nq; i++) o[b->q[i]].reset = 1;
  for (int i = 0; i < no; i++) /* a closed UDP socket's port: datagrams to it are lost */
    if (o[i].type == SOCK_DGRAM && o[i].peer == (int)(b - o)) o[i].peer = -1;
}

static void op_close(int s) {
  emit("close(s%d)", s);
  res(close(fds[s]));
  drop_slot(s);
}

static void op_dup(int s) {
  if (nf == MAXS) return;
  emit("dup(s%d)", s);
  int fd = dup(fds[s]);
  fdres(fd);
  if (fd >= 0) emit(" s%d", newslot(fd, fobj[s]));
}

struct opt { int level, name; const char *str; int value_matters; };
static const struct opt opts[] = {
  { SOL_SOCKET, SO_TYPE, "SO_TYPE", 1 },
  { SOL_SOCKET, SO_ERROR, "SO_ERROR", 1 },
  { SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN", 1 },
  { SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", 1 },
  { SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", 1 },
  { SOL_SOCKET, SO_BROADCAST, "SO_BROADCAST", 1 },
  { SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN", 1 },
  { SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL", 1 },
  { SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", 0 },
  { SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", 0 },
  { SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO", 1 },
  { SOL_SOCKET, SO_LINGER, "SO_LINGER", 1 },
  { IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", 1 },
  { IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY", 1 },
};
#define NOPTS (int)(sizeof opts / sizeof opts[0])

static void op_getsockopt(int s) {
  const struct opt *p = &opts[pick(NOPTS)];
  unsigned char v[32];
  memset(v, 0, sizeof v);
  socklen_t l = chance(10) ? 2 : sizeof v;
  emit("getsockopt(s%d,%s,len=%u)", s, p->str, l);
  int r = getsockopt(fds[s], p->level, p->name, v, &l);
  res(r);
  if (r == 0 && p->value_matters) {
    emit(" len=%u val=", l);
    for (unsigned i = 0; i < l && i < sizeof v; i++) emit("%02x", v[i]);
  }
}

static void op_setsockopt(int s) {
  const struct opt *p = &opts[pick(NOPTS)];
  int v = pick(2);
  const void *val = &v;
  socklen_t l = sizeof v;
  struct timeval tv = { 0, 20000 };
  struct linger lg = { 0, 0 };
  if (p->name == SO_RCVBUF || p->name == SO_SNDBUF) v = 4096 << pick(6);
  if (p->level == SOL_SOCKET && p->name == SO_RCVTIMEO) { val = &tv; l = sizeof tv; }
  if (p->level == SOL_SOCKET && p->name == SO_LINGER) { val = &lg; l = sizeof lg; }
  emit("setsockopt(s%d,%s,%d)", s, p->str, v);
  int r = setsockopt(fds[s], p->level, p->name, val, l);
  res(r);
  if (r == 0 && p->level == SOL_SOCKET && p->name == SO_RCVTIMEO) o[fobj[s]].rcvtimeo = 1;
}

static void op_name(int s) {
  struct sockaddr_storage ss;
  socklen_t l = sizeof ss;
  int peer = chance(50);
  emit("%s(s%d)", peer ? "getpeername" : "getsockname", s);
  int r = peer ? getpeername(fds[s], (void *)&ss, &l) : getsockname(fds[s], (void *)&ss, &l);
  res(r);
  if (r == 0) paddr(&ss, l);
}

/* A port nothing listens on: a TCP socket's, bound and kept (untraced) for the sequence, so
 * that no socket of the sequence is given it. */
static int dead_fd = -1;
static int find_dead_port(void) {
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  struct sockaddr_storage ss;
  socklen_t l = mkaddr(&ss, 0, 0);
  int p = 1;
  if (fd >= 0 && bind(fd, (void *)&ss, l) == 0 && getsockname(fd, (void *)&ss, &l) == 0)
    p = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  dead_fd = fd;
  return p;
}

static void sequence(uint64_t seed, long i) {
  rng = mix(seed ^ mix((uint64_t)i));
  no = nf = 0;
  fillk = 0;
  v6 = pick(2);
  dead_port = find_dead_port();
  emit("seq %ld %s\n", i, v6 ? "v6" : "v4");
  settle_left = 3;
  alarm(20);
  int n = 8 + pick(40);
  for (int k = 0; k < n; k++) {
    size_t mark = outn;
    emit("%d ", k);
    size_t start = outn;
    if (nf == 0 || chance(8)) op_socket();
    else {
      int s = pick(nf);
      struct obj *b = &o[fobj[s]];
      int what = pick(16);
      /* A connection under way ends at a time of its own: first wait for it. */
      if (b->state == CONNECTING && what != 12) what = 4;
      switch (what) {
      case 0: op_bind(s); break;
      case 1: if (b->type == SOCK_STREAM || chance(20)) op_listen(s); break;
      case 2: case 3: op_connect(s); break;
      case 4: if (b->state == CONNECTING) op_waitconn(s); else op_accept(s); break;
      case 5: case 6: case 7: op_send(s); break;
      case 8: case 9: case 10: op_recv(s); break;
      case 11: op_shutdown(s); break;
      case 12: if (chance(40)) op_close(s); else op_dup(s); break;
      case 13: op_getsockopt(s); break;
      case 14: op_setsockopt(s); break;
      default: op_name(s); break;
      }
    }
    if (outn == start) outn = mark; /* nothing called */
    else emit("\n");
  }
  while (nf) {
    emit("end close(s%d)", nf - 1);
    res(close(fds[nf - 1]));
    emit("\n");
    drop_slot(nf - 1);
  }
  if (dead_fd >= 0) close(dead_fd);
  alarm(0);
  emit("end\n");
  flush_out();
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s SEED COUNT [FIRST]\n", argv[0]);
    return 2;
  }
  uint64_t seed = strtoull(argv[1], NULL, 0);
  long count = atol(argv[2]), first = argc > 3 ? atol(argv[3]) : 0;
  all = argc > 4 && strcmp(argv[4], "all") == 0;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  for (long i = first; i < first + count; i++) sequence(seed, i);
  return 0;
}
