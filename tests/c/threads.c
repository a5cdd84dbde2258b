#define _GNU_SOURCE
/* Threads of one process sharing one stack: a loopback-only stack, acceptor threads that
   hand each connection to an echo thread of its own, 16 client threads each making 100
   connections (vde_msocket, connect, a message of its own, its echo, close), and threads
   running vde_stackcmd("ip addr") all the while. Prints "ok" when every check held;
   otherwise says what failed and exits 1 (2 on a hang). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <vdestack.h>

#define PORT 7001
#define CLIENTS 16
#define ROUNDS 100
#define ACCEPTORS 4
#define CMDERS 2
#define TOTAL (CLIENTS * ROUNDS)
#define MAXMSG 8192

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (errno %d: %s)\n", \
    errno, strerror(errno)); exit(1); } while (0)
#define CHECK(c) do { if (!(c)) FAIL("line %d: %s failed", __LINE__, #c); } while (0)

static struct vdestack *S;
static int L;
static atomic_int accepted_slots, echoed, clients_done, cmds_run, stop_cmds;
static atomic_int progress[CLIENTS];

static void on_alarm(int sig) {
  (void)sig;
  char m[256];
  int n = snprintf(m, sizeof m, "threads: timed out: %d connections echoed, %d/%d clients done, "
                   "%d stackcmds, client 0 at round %d\n", atomic_load(&echoed),
                   atomic_load(&clients_done), CLIENTS, atomic_load(&cmds_run),
                   atomic_load(&progress[0]));
  if (write(2, m, n) < 0) {}
  _exit(2);
}

static struct sockaddr_in lo(int port) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

static int write_all(int fd, const char *b, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    b += w; n -= (size_t)w;
  }
  return 0;
}

static ssize_t read_full(int fd, char *b, size_t n) {
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

/* Echoes everything until EOF, then closes. */
static void *echo(void *arg) {
  int k = (int)(long)arg;
  char buf[4096];
  for (;;) {
    ssize_t r = read(k, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) FAIL("echo: read on an accepted fd");
    if (r == 0) break;
    if (write_all(k, buf, (size_t)r) < 0) FAIL("echo: write on an accepted fd");
  }
  CHECK(close(k) == 0);
  atomic_fetch_add(&echoed, 1);
  return NULL;
}

/* Accepts connections, a slot taken before each accept, until all TOTAL are taken. */
static void *acceptor(void *arg) {
  (void)arg;
  while (atomic_fetch_add(&accepted_slots, 1) < TOTAL) {
    struct sockaddr_in p; socklen_t pl = sizeof p;
    int k = accept(L, (struct sockaddr *)&p, &pl);
    if (k < 0) FAIL("accept (%d slots taken)", atomic_load(&accepted_slots));
    if (pl != sizeof p || p.sin_family != AF_INET || p.sin_addr.s_addr != htonl(INADDR_LOOPBACK))
      FAIL("accept: peer address family %d len %u addr %s", p.sin_family, pl, inet_ntoa(p.sin_addr));
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 128 * 1024);
    int e = pthread_create(&t, &at, echo, (void *)(long)k);
    if (e) { errno = e; FAIL("pthread_create for an echo thread"); }
    pthread_attr_destroy(&at);
  }
  return NULL;
}

static void *client(void *arg) {
  int id = (int)(long)arg;
  static __thread char msg[MAXMSG], back[MAXMSG];
  struct sockaddr_in a = lo(PORT);
  for (int i = 0; i < ROUNDS; i++) {
    atomic_store(&progress[id], i);
    int c = vde_msocket(S, AF_INET, SOCK_STREAM, 0);
    if (c < 0) FAIL("client %d round %d: vde_msocket", id, i);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0)
      FAIL("client %d round %d: connect", id, i);
    /* A message no other client or round sends, of varying length. */
    int len = snprintf(msg, sizeof msg, "client %02d round %03d:", id, i);
    int want = 24 + (id * 131 + i * 197) % (MAXMSG - 24);
    for (int j = len; j < want; j++) msg[j] = (char)('a' + (id * 7 + i * 3 + j) % 26);
    if (want > len) len = want;
    if (write_all(c, msg, (size_t)len) < 0) FAIL("client %d round %d: write %d bytes", id, i, len);
    ssize_t got = read_full(c, back, (size_t)len);
    if (got != len) FAIL("client %d round %d: echo of %d bytes: got %zd", id, i, len, got);
    if (memcmp(msg, back, (size_t)len) != 0) {
      back[got < 40 ? got : 40] = 0;
      FAIL("client %d round %d: echo differs, begins \"%s\"", id, i, back);
    }
    if (close(c) != 0) FAIL("client %d round %d: close", id, i);
  }
  atomic_fetch_add(&clients_done, 1);
  return NULL;
}

static void *cmder(void *arg) {
  (void)arg;
  while (!atomic_load(&stop_cmds)) {
    int r = vde_stackcmd(S, "ip addr");
    if (r != 0) FAIL("vde_stackcmd(\"ip addr\") returned %d after %d calls", r, atomic_load(&cmds_run));
    atomic_fetch_add(&cmds_run, 1);
  }
  return NULL;
}

static pthread_t start(void *(*f)(void *), long arg) {
  pthread_t t;
  int e = pthread_create(&t, NULL, f, (void *)arg);
  if (e) { errno = e; FAIL("pthread_create"); }
  return t;
}

int main(void) {
  signal(SIGALRM, on_alarm);
  alarm(18);
  S = vde_addstack(NULL, NULL);
  CHECK(S != NULL);
  CHECK(vde_stackcmd(S, "ip link set lo up") == 0);

  /* "ip addr" prints the loopback address; the threads' output then goes to /dev/null. */
  int out = dup(1);
  int p[2];
  CHECK(out >= 0 && pipe(p) == 0);
  fflush(stdout);
  CHECK(dup2(p[1], 1) == 1);
  CHECK(vde_stackcmd(S, "ip addr") == 0);
  CHECK(dup2(out, 1) == 1);
  close(p[1]);
  char shown[4096] = {0};
  CHECK(read_full(p[0], shown, sizeof shown - 1) > 0);
  close(p[0]);
  if (!strstr(shown, "127.0.0.1")) FAIL("\"ip addr\" does not show 127.0.0.1:\n%s", shown);
  int devnull = open("/dev/null", O_WRONLY);
  CHECK(devnull >= 0 && dup2(devnull, 1) == 1);
  close(devnull);

  L = vde_msocket(S, AF_INET, SOCK_STREAM, 0);
  CHECK(L >= 0);
  struct sockaddr_in a = lo(PORT);
  CHECK(bind(L, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(L, 64) == 0);

  pthread_t acc[ACCEPTORS], cl[CLIENTS], cm[CMDERS];
  for (int i = 0; i < ACCEPTORS; i++) acc[i] = start(acceptor, i);
  for (int i = 0; i < CMDERS; i++) cm[i] = start(cmder, i);
  for (int i = 0; i < CLIENTS; i++) cl[i] = start(client, i);
  for (int i = 0; i < CLIENTS; i++) pthread_join(cl[i], NULL);
  atomic_store(&stop_cmds, 1);
  for (int i = 0; i < CMDERS; i++) pthread_join(cm[i], NULL);
  for (int i = 0; i < ACCEPTORS; i++) pthread_join(acc[i], NULL);
  /* Every echo thread ends once its client's FIN arrives. */
  while (atomic_load(&echoed) < TOTAL) usleep(1000);
  if (atomic_load(&cmds_run) < 1) FAIL("no vde_stackcmd ran alongside the clients");
  close(L);
  vde_delstack(S);

  fflush(stdout);
  CHECK(dup2(out, 1) == 1);
  fprintf(stderr, "threads: %d connections echoed, %d stackcmds alongside\n", TOTAL,
          atomic_load(&cmds_run));
  puts("ok");
  return 0;
}
