/* The cost of the seal (scripts/reliability.d/seal): per-call times of socket calls made
 * straight to the kernel, as a static program makes them. Run it sealed (every call below
 * traps to the supervisor), under LD_PRELOAD alone, and on the kernel's sockets, and compare.
 *
 *   sealbench sockets N PORT   socket+close, a UDP sendto, getsockname, connect+accept,
 *                              getsockopt on an AF_UNIX socket (the pass-through path)
 *   sealbench getppid N        a syscall that the filter lets through (its BPF cost)
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void report(const char *what, double t0, long n) {
    printf("%s: %.2f us\n", what, (now() - t0) / n * 1e6);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sealbench sockets N PORT | getppid N\n");
        return 2;
    }
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "getppid")) {
        double t0 = now();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        printf("getppid: %.1f ns\n", (now() - t0) / n * 1e9);
        return 0;
    }
    int port = atoi(argv[3]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    double t0 = now();
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s < 0) die("socket");
        close(s);
    }
    report("socket+close", t0, n);

    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = a;
    to.sin_port = htons(port + 1); /* nobody listens there */
    char msg[64] = {0};
    t0 = now();
    for (long i = 0; i < n; i++)
        if (sendto(u, msg, sizeof msg, 0, (struct sockaddr *)&to, sizeof to) < 0) die("sendto");
    report("sendto (UDP, 64 bytes)", t0, n);

    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(l, 128) < 0) die("listen");
    struct sockaddr_in got;
    socklen_t len;
    t0 = now();
    for (long i = 0; i < n; i++) {
        len = sizeof got;
        if (getsockname(l, (struct sockaddr *)&got, &len) < 0) die("getsockname");
    }
    report("getsockname", t0, n);

    double in_connect = 0;
    t0 = now();
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        double t1 = now();
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
        in_connect += now() - t1;
        int s = accept(l, NULL, NULL);
        if (s < 0) die("accept");
        close(s);
        close(c);
    }
    report("socket+connect+accept+close", t0, n);
    printf("connect (blocking, loopback): %.2f us\n", in_connect / n * 1e6);

    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) die("socketpair");
    int ty;
    t0 = now();
    for (long i = 0; i < n; i++) {
        len = sizeof ty;
        if (getsockopt(sp[0], SOL_SOCKET, SO_TYPE, &ty, &len) < 0) die("getsockopt");
    }
    report("getsockopt on an AF_UNIX socket", t0, n);
    return 0;
}
