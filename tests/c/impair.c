/* vde_addstack with impaired mem:// locators: bad parameters fail with EINVAL (and a message on
   stderr), good ones make a stack. Prints "ok" when every check held. */
#include <stdio.h>
#include <vdestack.h>

#include "check.h"

int main(void) {
  errno = 0;
  CHECK(vde_addstack("mem://capi-impair[loss=200%]", NULL) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(vde_addstack("mem://capi-impair[delay=5]", NULL) == NULL && errno == EINVAL);
  struct vdestack *a = vde_addstack("mem://capi-impair[loss=1%,delay=1ms,corrupt=0]", NULL);
  CHECK(a != NULL);
  /* corrupt= on a segment opened without checksums: only the engine can tell. */
  struct vdestack *c = vde_addstack("mem://capi-clean", NULL);
  CHECK(c != NULL);
  errno = 0;
  CHECK(vde_addstack("mem://capi-clean[corrupt=1%]", NULL) == NULL && errno == EINVAL);
  vde_delstack(a);
  vde_delstack(c);
  printf("ok\n");
  return 0;
}
