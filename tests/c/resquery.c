/* res_query(3) of an A record, as programs that use libresolv directly do: prints the first
   address, or "fail h_errno=N". */
#include <stdio.h>
#include <netinet/in.h>
#include <arpa/nameser.h>
#include <resolv.h>
#include <netdb.h>
int main(int argc, char **argv) {
  unsigned char ans[512];
  int n = res_query(argv[1], C_IN, T_A, ans, sizeof ans);
  if (n < 0) { printf("fail h_errno=%d\n", h_errno); return 1; }
  ns_msg m; ns_rr rr;
  if (ns_initparse(ans, n, &m) < 0 || ns_parserr(&m, ns_s_an, 0, &rr) < 0) { puts("parse"); return 2; }
  const unsigned char *d = ns_rr_rdata(rr);
  printf("%u.%u.%u.%u\n", d[0], d[1], d[2], d[3]);
  return 0;
}
