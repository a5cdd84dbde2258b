/* What one vde_open (libvdeplug) costs against a switch: the floor under creating a stack
 * on vde://.  gcc -O2 -o vdeopen scripts/vdeopen.c -lvdeplug && ./vdeopen vde:///path/to/switch */
#include <stdio.h>
#include <time.h>
#include <libvdeplug.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c, char **v){ int n=200; VDECONN *cs[200]; double t0=now();
 for(int i=0;i<n;i++){ cs[i]=vde_open(v[1],"x",NULL); if(!cs[i]){perror("vde_open");return 1;} }
 double t1=now(); for(int i=0;i<n;i++) vde_close(cs[i]);
 printf("vde_open_us=%.1f\n",(t1-t0)*1e6/n); return 0; }
