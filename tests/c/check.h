/* Shared by the C test programs: CHECK ends the program with the line, the expression and
 * errno when the expression is false; lo() is 127.0.0.1:port. */
#ifndef VDESTACK_TEST_CHECK_H
#define VDESTACK_TEST_CHECK_H
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "line %d: %s failed (errno %d: %s)\n", \
    __LINE__, #c, errno, strerror(errno)); exit(1); } } while (0)

static inline struct sockaddr_in lo(int port) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}
#endif
