/* sendmmsg and recvmmsg on UDP sockets, for tests/seal.rs: built static, so that sealed it
 * traps and on the kernel it does not; the two outputs are compared. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7400)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    /* The sender is bound first: right after a first sendto, a stack's UDP socket may not
     * have its port yet (Linux binds it at once). */
    struct sockaddr_in b = a;
    b.sin_port = htons(7401);
    if (r < 0 || s < 0 || bind(r, (struct sockaddr *)&a, sizeof a) < 0 ||
        bind(s, (struct sockaddr *)&b, sizeof b) < 0) {
        perror("setup");
        return 1;
    }
    const char *words[3] = {"one", "two", "three"};
    struct mmsghdr out[3];
    struct iovec oiov[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++) {
        oiov[i].iov_base = (void *)words[i];
        oiov[i].iov_len = strlen(words[i]);
        out[i].msg_hdr.msg_iov = &oiov[i];
        out[i].msg_hdr.msg_iovlen = 1;
        out[i].msg_hdr.msg_name = &a;
        out[i].msg_hdr.msg_namelen = sizeof a;
    }
    int n = sendmmsg(s, out, 3, 0);
    printf("sendmmsg: %d, lengths %u %u %u\n", n, out[0].msg_len, out[1].msg_len, out[2].msg_len);
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    getsockname(s, (struct sockaddr *)&from, &flen);
    int got = 0;
    while (got < 3) {
        struct mmsghdr in[4];
        struct iovec iiov[4];
        char bufs[4][32];
        struct sockaddr_in names[4];
        memset(in, 0, sizeof in);
        for (int i = 0; i < 4; i++) {
            iiov[i].iov_base = bufs[i];
            iiov[i].iov_len = sizeof bufs[i];
            in[i].msg_hdr.msg_iov = &iiov[i];
            in[i].msg_hdr.msg_iovlen = 1;
            in[i].msg_hdr.msg_name = &names[i];
            in[i].msg_hdr.msg_namelen = sizeof names[i];
        }
        int m = recvmmsg(r, in, 4, MSG_WAITFORONE, NULL);
        if (m < 0) {
            perror("recvmmsg");
            return 1;
        }
        for (int i = 0; i < m; i++) {
            int same = names[i].sin_port == from.sin_port &&
                       names[i].sin_addr.s_addr == htonl(INADDR_LOOPBACK);
            printf("recvmmsg: %.*s (%u bytes) from %s, name length %u\n", (int)in[i].msg_len,
                   bufs[i], in[i].msg_len, same ? "the sender" : "elsewhere",
                   in[i].msg_hdr.msg_namelen);
        }
        got += m;
    }
    return 0;
}
