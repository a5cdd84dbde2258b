/* The EXAMPLE of libvdestack(3), completed into a whole program: the lines between the
   markers are the man page's, as they are. The rest checks that the fd works: it listens on
   the stack's own address and talks to itself through it. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <vdestack.h>

int main(void) {
  /* --- the man page's example --- */
	   int fd;
	   int exit_status;
	   struct vdestack *stack = vde_addstack("vde://", NULL);
	   if (stack == NULL)
	       return perror("vde_addstack"), 1;
	   exit_status = vde_stackcmd(stack,
		     "/bin/ip link set vde0 up;"
		     "/bin/ip addr add 10.0.0.1/24 dev vde0;"
		     "/bin/ip route add default via 10.0.0.254");
	   if (exit_status != 0)
	      return fprintf(stderr, "vde_stackcmd: %d\n", exit_status), 1;
	   fd = vde_msocket(stack, AF_INET, SOCK_STREAM, 0);
  /* --- end of the example --- */
  if (fd < 0) return perror("vde_msocket"), 1;
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(80) };
  inet_pton(AF_INET, "10.0.0.1", &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return perror("bind"), 1;
  if (listen(fd, 5) < 0) return perror("listen"), 1;
  int c = vde_msocket(stack, AF_INET, SOCK_STREAM, 0);
  if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) return perror("connect"), 1;
  int s = accept(fd, NULL, NULL);
  if (s < 0) return perror("accept"), 1;
  char buf[32] = {0};
  if (write(c, "ping", 4) != 4 || read(s, buf, sizeof buf) != 4) return perror("data"), 1;
  struct sockaddr_in p; socklen_t pl = sizeof p;
  if (getpeername(s, (struct sockaddr *)&p, &pl) < 0) return perror("getpeername"), 1;
  printf("%s from %s\n", buf, inet_ntoa(p.sin_addr));
  close(s); close(c); close(fd);
	   vde_delstack(stack);
  return 0;
}
