/* Unix sockets across checkpoint/restart, checked by the program itself.
 * Mode "all": socketpairs (stream, dgram, seqpacket) with bytes queued on
 * both sides, one end held by a forked child; a named stream listener with
 * an accepted connection holding queued bytes; an abstract seqpacket
 * listener; a bound datagram socket with datagrams waiting.
 * Mode "rights": an fd in flight over a socketpair (cryo must refuse).
 * Mode "server": listens on ext.sock and says "last words" to each client;
 * mode "client": connected to it (a stream to outside the tree: cryo must
 * refuse); "client closed": restarted after checkpoint --tcp-close, it
 * reads the last words, then end of file, and cannot write.
 * Prints "ready", waits for a file "go", checks, prints OK/BAD lines, "done". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "selfcheck.h"


static socklen_t addr(struct sockaddr_un *a, const char *path, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (abstract) {
        strcpy(a->sun_path + 1, path);
        return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
    }
    strcpy(a->sun_path, path);
    return sizeof *a;
}

static int listener(int type, const char *name, int abstract) {
    struct sockaddr_un a;
    socklen_t len = addr(&a, name, abstract);
    int s = socket(AF_UNIX, type, 0);
    if (bind(s, (struct sockaddr *)&a, len) < 0) die("bind");
    if (type != SOCK_DGRAM && listen(s, 8) < 0) die("listen");
    return s;
}

static int connect_to(int type, const char *name, int abstract) {
    struct sockaddr_un a;
    socklen_t len = addr(&a, name, abstract);
    int s = socket(AF_UNIX, type, 0);
    if (connect(s, (struct sockaddr *)&a, len) < 0) return -1;
    return s;
}

static int recv_is(int fd, const char *want) {
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    buf[n < 0 ? 0 : n] = 0;
    if (strcmp(buf, want) != 0) {
        printf("  got \"%s\", want \"%s\"\n", buf, want);
        return 0;
    }
    return 1;
}

static int all(void) {
    char name[64];
    snprintf(name, sizeof name, "cryo-test-%d", getpid());
    int st[2], dg[2], sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, st);
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg);
    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp);
    send(st[0], "to the child ", 13, 0);
    send(st[0], "in two sends", 12, 0);
    send(st[1], "from the child", 14, 0);
    send(dg[0], "d1", 2, 0);
    send(dg[0], "dd2", 3, 0);
    send(dg[1], "back", 4, 0);
    send(sp[0], "record one", 10, 0);
    send(sp[0], "record two", 10, 0);
    unlink("srv.sock");
    int srv = listener(SOCK_STREAM, "srv.sock", 0);
    int cli = connect_to(SOCK_STREAM, "srv.sock", 0);
    int acc = accept(srv, NULL, NULL);
    send(cli, "before", 6, 0);
    int abs_srv = listener(SOCK_SEQPACKET, name, 1);
    unlink("dgram.sock");
    int drx = listener(SOCK_DGRAM, "dgram.sock", 0);
    int dtx = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a;
    socklen_t alen = addr(&a, "dgram.sock", 0);
    sendto(dtx, "first datagram", 14, 0, (struct sockaddr *)&a, alen);
    sendto(dtx, "second", 6, 0, (struct sockaddr *)&a, alen);
    close(dtx);
    fcntl(acc, F_SETFL, O_NONBLOCK);
    pid_t child = fork();
    if (child == 0) {
        /* The child holds the other end of the stream pair. */
        close(st[0]);
        wait_for_go();
        char buf[64] = {0};
        ssize_t n = recv(st[1], buf, sizeof buf - 1, MSG_DONTWAIT);
        int ok = n == 25 && strcmp(buf, "to the child in two sends") == 0;
        send(st[1], ok ? "child ok" : "child bad", ok ? 8 : 9, 0);
        _exit(ok ? 0 : 1);
    }
    close(st[1]);
    wait_go();

    int status;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "stream-pair-child", "child status %x", status);
    CHECK(recv_is(st[0], "from the childchild ok"), "stream-pair-queued", "see above");
    CHECK(recv_is(dg[1], "d1") && recv_is(dg[1], "dd2") && recv_is(dg[0], "back"), "dgram-pair-bounds", "see above");
    CHECK(recv_is(sp[1], "record one") && recv_is(sp[1], "record two"), "seqpacket-pair-bounds", "see above");
    CHECK(recv_is(sp[1], ""), "seqpacket-pair-empty", "more records");
    send(cli, " after", 6, 0);
    CHECK(recv_is(acc, "before after"), "accepted-queued", "see above");
    send(acc, "reply", 5, 0);
    CHECK(recv_is(cli, "reply"), "accepted-reply", "see above");
    int c2 = connect_to(SOCK_STREAM, "srv.sock", 0);
    int a2 = c2 < 0 ? -1 : accept(srv, NULL, NULL);
    CHECK(c2 >= 0 && a2 >= 0 && send(c2, "new", 3, 0) == 3 && recv_is(a2, "new"), "listener-accepts", "c2 %d a2 %d", c2, a2);
    int c3 = connect_to(SOCK_SEQPACKET, name, 1);
    int a3 = c3 < 0 ? -1 : accept(abs_srv, NULL, NULL);
    CHECK(c3 >= 0 && a3 >= 0, "abstract-listener-accepts", "c3 %d a3 %d", c3, a3);
    CHECK(recv_is(drx, "first datagram") && recv_is(drx, "second"), "bound-dgram-queued", "see above");
    struct sockaddr_un got;
    socklen_t glen = sizeof got;
    getsockname(srv, (struct sockaddr *)&got, &glen);
    CHECK(strstr(got.sun_path, "srv.sock") != NULL, "listener-name", "%s", got.sun_path);
    return bad;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "all";
    int r = 0;
    if (strcmp(mode, "all") == 0) {
        r = all();
    } else if (strcmp(mode, "rights") == 0) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        int fd = open("/dev/null", O_RDONLY);
        char c = 'x';
        struct iovec iov = {&c, 1};
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
        if (sendmsg(sv[0], &mh, 0) < 0) die("sendmsg");
        wait_go();
    } else if (strcmp(mode, "server") == 0) {
        unlink("ext.sock");
        int s = listener(SOCK_STREAM, "ext.sock", 0);
        printf("listening\n");
        for (;;) {
            int c = accept(s, NULL, NULL);
            send(c, "last words", 10, 0);
        }
    } else {
        int s = connect_to(SOCK_STREAM, "ext.sock", 0);
        if (s < 0) die("connect");
        /* Until the server's words are in. */
        char b[16];
        while (recv(s, b, sizeof b, MSG_PEEK | MSG_DONTWAIT) < 10)
            usleep(10000);
        wait_go();
        if (argc > 2 && strcmp(argv[2], "closed") == 0) {
            int words = recv_is(s, "last words");
            CHECK(words && recv(s, b, sizeof b, 0) == 0 && send(s, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "unix-peer-closed", "see above");
            r = bad;
        }
    }
    printf("done %s\n", r ? "with failures" : "ok");
    return r;
}
