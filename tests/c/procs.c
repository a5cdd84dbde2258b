#define _GNU_SOURCE
/* Processes sharing one stack through fork(): the parent's engine answers every process.

   ./procs answers: a stack and a listener made in the parent, then 8 children each doing 200
   rounds of control calls whose answers belong to the caller alone (a bind to a port of its
   own then getsockname, SO_RCVBUF set to a value of its own then getsockopt, a connection
   whose name, peer name and the port the server saw must agree): two processes calling at
   once never get each other's answers.

   ./procs forkserver: the classic fork server: the parent accepts, forks a child per
   connection that serves it (its peer's port, then an echo) and _exits, and closes its copy;
   a forked client process makes 20 connections at once and checks every answer.

   Prints "ok" when every check held; otherwise says what failed and exits 1 (2 on a hang). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <vdestack.h>

#define FAIL(...) do { fprintf(stderr, "[pid %d] ", (int)getpid()); fprintf(stderr, __VA_ARGS__); \
    fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno)); exit(1); } while (0)
#define CHECK(c) do { if (!(c)) FAIL("line %d: %s failed", __LINE__, #c); } while (0)

static const char *Who = "parent";
static int Round = -1;

static void on_alarm(int sig) {
  (void)sig;
  char m[160];
  int n = snprintf(m, sizeof m, "procs: %s timed out at round %d\n", Who, Round);
  if (write(2, m, n) < 0) {}
  _exit(2);
}

/* Bounds the process's life: a hang fails with a message instead of blocking the test.
   (Pending alarms are not inherited across fork, so each child sets its own.) */
static void deadline(const char *who, int secs) {
  Who = who;
  signal(SIGALRM, on_alarm);
  alarm(secs);
}

static struct sockaddr_in lo(int port) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int write_all(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w; n -= (size_t)w;
  }
  return 0;
}

static ssize_t read_full(int fd, void *p, size_t n) {
  char *b = p;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, b + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* getsockname or getpeername as host-order port, checking the address is 127.0.0.1. */
static int name_port(int fd, int peer, const char *what, int child, int round) {
  struct sockaddr_in n; socklen_t nl = sizeof n;
  memset(&n, 0xff, sizeof n);
  int r = peer ? getpeername(fd, (struct sockaddr *)&n, &nl)
               : getsockname(fd, (struct sockaddr *)&n, &nl);
  if (r != 0) FAIL("child %d round %d: %s", child, round, what);
  if (nl != sizeof n || n.sin_family != AF_INET || n.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
    FAIL("child %d round %d: %s gave family %d len %u address %s", child, round, what,
         n.sin_family, nl, inet_ntoa(n.sin_addr));
  return ntohs(n.sin_port);
}

/* ---- answers ---- */

#define CHILDREN 8
#define ROUNDS 200
#define SRV_PORT 7100
#define BIND_BASE 20000 /* + child * ROUNDS + round: a port of (child, round) alone */
#define CONN_BASE 22000 /* likewise; both below the ephemeral range (32768..60999) */

/* The parent's server: tells each connection the port it saw it come from. */
static void serve_ports(int l) {
  for (;;) {
    struct sockaddr_in p; socklen_t pl = sizeof p;
    int k = accept(l, (struct sockaddr *)&p, &pl);
    if (k < 0) FAIL("server: accept");
    if (pl != sizeof p || p.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
      FAIL("server: accept gave peer %s len %u", inet_ntoa(p.sin_addr), pl);
    unsigned short port = p.sin_port; /* network order, as sent */
    if (write_all(k, &port, sizeof port) < 0) FAIL("server: write");
    close(k);
  }
}

static void answers_child(struct vdestack *s, int child) {
  deadline("answers child", 18);
  struct sockaddr_in srv = lo(SRV_PORT);
  for (int i = 0; i < ROUNDS; i++) {
    Round = i;
    int mine = child * ROUNDS + i;

    /* A bound port and a buffer size no other process asks for. */
    int fd = vde_msocket(s, AF_INET, i % 2 ? SOCK_DGRAM : SOCK_STREAM, 0);
    if (fd < 0) FAIL("child %d round %d: vde_msocket", child, i);
    struct sockaddr_in b = lo(BIND_BASE + mine);
    if (bind(fd, (struct sockaddr *)&b, sizeof b) != 0)
      FAIL("child %d round %d: bind to port %d", child, i, BIND_BASE + mine);
    int got = name_port(fd, 0, "getsockname of a bound socket", child, i);
    if (got != BIND_BASE + mine)
      FAIL("child %d round %d: bound to %d, getsockname says %d", child, i, BIND_BASE + mine, got);
    int want = 10000 + mine, v = -1;
    socklen_t vl = sizeof v;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want) != 0)
      FAIL("child %d round %d: setsockopt SO_RCVBUF", child, i);
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &vl) != 0)
      FAIL("child %d round %d: getsockopt SO_RCVBUF", child, i);
    if (v != want && v != 2 * want) /* Linux reports double what was set */
      FAIL("child %d round %d: SO_RCVBUF set to %d, read back %d", child, i, want, v);
    close(fd);

    /* A connection: its own name (bound, or ephemeral on odd rounds), the server as peer, and
       the server saw it come from that very port. */
    int c = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
    if (c < 0) FAIL("child %d round %d: vde_msocket", child, i);
    int bound = 0;
    if (i % 2 == 0) {
      bound = CONN_BASE + mine;
      struct sockaddr_in cb = lo(bound);
      if (bind(c, (struct sockaddr *)&cb, sizeof cb) != 0)
        FAIL("child %d round %d: bind to port %d", child, i, bound);
    }
    if (connect(c, (struct sockaddr *)&srv, sizeof srv) != 0)
      FAIL("child %d round %d: connect", child, i);
    int me = name_port(c, 0, "getsockname of a connected socket", child, i);
    if (bound && me != bound)
      FAIL("child %d round %d: bound to %d, connected from %d", child, i, bound, me);
    int peer = name_port(c, 1, "getpeername", child, i);
    if (peer != SRV_PORT) FAIL("child %d round %d: getpeername port %d", child, i, peer);
    unsigned short seen;
    if (read_full(c, &seen, sizeof seen) != sizeof seen)
      FAIL("child %d round %d: reading the port the server saw", child, i);
    if (ntohs(seen) != me)
      FAIL("child %d round %d: I am port %d, the server saw %d", child, i, me, ntohs(seen));
    close(c);
  }
  exit(0);
}

static int answers(void) {
  deadline("answers parent", 19);
  struct vdestack *s = vde_addstack(NULL, NULL);
  CHECK(s != NULL);
  int l = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(l >= 0);
  struct sockaddr_in a = lo(SRV_PORT);
  CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(l, 64) == 0);
  pid_t kids[CHILDREN];
  for (int i = 0; i < CHILDREN; i++) {
    fflush(NULL);
    kids[i] = fork();
    CHECK(kids[i] >= 0);
    if (kids[i] == 0) answers_child(s, i);
  }
  /* The server runs in a child of its own, so the parent only waits. */
  fflush(NULL);
  pid_t server = fork();
  CHECK(server >= 0);
  if (server == 0) {
    deadline("answers server", 19);
    serve_ports(l);
  }
  int bad = 0;
  for (int i = 0; i < CHILDREN; i++) {
    int st;
    CHECK(waitpid(kids[i], &st, 0) == kids[i]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "child %d (pid %d) failed: %s %d\n", i, (int)kids[i],
              WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
      bad = 1;
    }
  }
  kill(server, SIGKILL);
  waitpid(server, NULL, 0);
  if (bad) exit(1);
  close(l);
  vde_delstack(s);
  fprintf(stderr, "procs answers: %d processes x %d rounds\n", CHILDREN, ROUNDS);
  puts("ok");
  return 0;
}

/* ---- forkserver ---- */

#define CONNS 20
#define FS_PORT 7200

/* Serves one connection in a child of the server: the port of its peer, then an echo. */
static void serve_one(int k) {
  deadline("forkserver connection child", 18);
  struct sockaddr_in p; socklen_t pl = sizeof p;
  if (getpeername(k, (struct sockaddr *)&p, &pl) != 0) FAIL("server child: getpeername");
  if (write_all(k, &p.sin_port, sizeof p.sin_port) < 0) FAIL("server child: write");
  char buf[4096];
  for (;;) {
    ssize_t r = read(k, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) FAIL("server child: read");
    if (r == 0) break;
    if (write_all(k, buf, (size_t)r) < 0) FAIL("server child: write");
  }
  close(k);
  _exit(0);
}

/* The client: all connections open at once, then a message on each, then the answers. */
static void client(struct vdestack *s) {
  deadline("forkserver client", 18);
  struct sockaddr_in a = lo(FS_PORT);
  int c[CONNS], me[CONNS];
  char msg[CONNS][64];
  for (int i = 0; i < CONNS; i++) {
    Round = i;
    c[i] = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
    if (c[i] < 0) FAIL("client: vde_msocket %d", i);
    if (connect(c[i], (struct sockaddr *)&a, sizeof a) != 0) FAIL("client: connect %d", i);
    me[i] = name_port(c[i], 0, "client getsockname", -1, i);
  }
  for (int i = 0; i < CONNS; i++) {
    Round = i;
    int n = snprintf(msg[i], sizeof msg[i], "connection %d of process %d", i, (int)getpid());
    if (write_all(c[i], msg[i], (size_t)n) < 0) FAIL("client: write on connection %d", i);
    if (shutdown(c[i], SHUT_WR) != 0) FAIL("client: shutdown connection %d", i);
  }
  for (int i = 0; i < CONNS; i++) {
    Round = i;
    unsigned short seen;
    char back[128] = {0};
    if (read_full(c[i], &seen, sizeof seen) != sizeof seen)
      FAIL("client: connection %d: no port from the server", i);
    if (ntohs(seen) != me[i])
      FAIL("client: connection %d from port %d: its server saw port %d", i, me[i], ntohs(seen));
    ssize_t n = read_full(c[i], back, sizeof back - 1); /* to EOF: the server child's close */
    if (n != (ssize_t)strlen(msg[i]) || memcmp(back, msg[i], (size_t)n) != 0)
      FAIL("client: connection %d: sent \"%s\", echo \"%s\" (%zd bytes)", i, msg[i], back, n);
    close(c[i]);
  }
  exit(0);
}

static int forkserver(void) {
  deadline("forkserver parent", 19);
  struct vdestack *s = vde_addstack(NULL, NULL);
  CHECK(s != NULL);
  int l = vde_msocket(s, AF_INET, SOCK_STREAM, 0);
  CHECK(l >= 0);
  struct sockaddr_in a = lo(FS_PORT);
  CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(l, CONNS) == 0);
  fflush(NULL);
  pid_t cl = fork();
  CHECK(cl >= 0);
  if (cl == 0) {
    close(l);
    client(s);
  }
  pid_t kids[CONNS];
  for (int i = 0; i < CONNS; i++) {
    Round = i;
    int k = accept(l, NULL, NULL);
    CHECK(k >= 0);
    fflush(NULL);
    kids[i] = fork();
    CHECK(kids[i] >= 0);
    if (kids[i] == 0) {
      close(l);
      serve_one(k);
    }
    CHECK(close(k) == 0);
  }
  int bad = 0, st;
  for (int i = 0; i < CONNS; i++) {
    CHECK(waitpid(kids[i], &st, 0) == kids[i]);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "server child %d failed (status 0x%x)\n", i, st);
      bad = 1;
    }
  }
  CHECK(waitpid(cl, &st, 0) == cl);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "the client process failed (status 0x%x)\n", st);
    bad = 1;
  }
  if (bad) exit(1);
  close(l);
  vde_delstack(s);
  fprintf(stderr, "procs forkserver: %d connections, one process each\n", CONNS);
  puts("ok");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 2 && strcmp(argv[1], "answers") == 0) return answers();
  if (argc == 2 && strcmp(argv[1], "forkserver") == 0) return forkserver();
  fprintf(stderr, "usage: %s answers|forkserver\n", argv[0]);
  return 1;
}
