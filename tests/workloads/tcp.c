/* TCP and UDP across checkpoint/restart, checked by the program itself.
 * Mode "pair": a listener on 127.0.0.1 (port printed), a connection to it
 * from a forked child with unread bytes on both sides, a UDP socket bound
 * next to it and a UDP socket connected to that, two datagrams from which
 * wait unread. After "go" both ends read
 * what was in flight and talk on; the listener accepts the connection the
 * test makes from outside and echoes a line on it.
 * Mode "server PORTFILE": listens, writes its port, accepts and keeps
 * connections. Mode "client PORT": connected to it (outside the tree); after
 * "go" it expects the connection to have been reset. Mode "closewait PORT":
 * connected to a server outside that sent "last words" and closed; after
 * "go" it reads them, then end of file. Mode "halfclosed": a connection
 * inside the tree whose client (a child) sent a request and shut its
 * sending side down, not yet read by the server; after "go" the server
 * reads it and end of file, and answers; the child reads the answer. Mode
 * "noaccept PORTFILE": listens (port in PORTFILE) and accepts only after
 * "go": one client, answering its "ping".
 * Prints "ready", waits for a file "go", prints OK/BAD lines and "done". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "selfcheck.h"


static struct sockaddr_in lo(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int port_of(int s) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

static int listen_on(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(s, 16) < 0) die("listen");
    return s;
}

static int connect_to(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = lo(port);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    return s;
}

/* Read exactly strlen(want) bytes (waiting up to 5 s) and compare. */
static int read_is(int fd, const char *want) {
    char buf[256] = {0};
    size_t n = strlen(want), got = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) break;
        got += r;
    }
    if (got != n || memcmp(buf, want, n) != 0) {
        printf("  got \"%s\", want \"%s\"\n", buf, want);
        return 0;
    }
    return 1;
}

static int pair(void) {
    int srv = listen_on(0);
    int port = port_of(srv);
    int u_rx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = lo(0);
    bind(u_rx, (struct sockaddr *)&ua, sizeof ua);
    int uport = port_of(u_rx);
    int u_tx = socket(AF_INET, SOCK_DGRAM, 0);
    ua = lo(uport);
    connect(u_tx, (struct sockaddr *)&ua, sizeof ua);
    int one = 1;
    pid_t child = fork();
    if (child == 0) {
        int c = connect_to(port);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        send(c, "hello from the client", 21, 0);
        wait_for_go();
        int ok = read_is(c, "hello from the server");
        int nd = 0;
        socklen_t l = sizeof nd;
        getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &nd, &l);
        send(c, ok && nd ? "child ok" : "child no", 8, 0);
        _exit(ok && nd ? 0 : 1);
    }
    int acc = accept(srv, NULL, NULL);
    send(acc, "hello from the server", 21, 0);
    /* Two datagrams left unread. */
    send(u_tx, "first datagram", 14, 0);
    send(u_tx, "second", 6, 0);
    usleep(100000);
    printf("port %d\n", port);
    wait_go();

    CHECK(read_is(acc, "hello from the client"), "tcp-unread-bytes", "see above");
    CHECK(read_is(acc, "child ok"), "tcp-child-side", "see above");
    int st;
    waitpid(child, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tcp-child-exit", "status %x", st);
    CHECK(port_of(srv) == port, "tcp-listener-port", "port %d", port_of(srv));
    char dg[64];
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ssize_t n1 = recvfrom(u_rx, dg, sizeof dg, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
    int first = n1 == 14 && memcmp(dg, "first datagram", 14) == 0 && ntohs(from.sin_port) == port_of(u_tx);
    ssize_t n2 = recv(u_rx, dg, sizeof dg, MSG_DONTWAIT);
    CHECK(first && n2 == 6 && memcmp(dg, "second", 6) == 0, "udp-queued", "got %zd and %zd bytes", n1, n2);
    CHECK(send(u_tx, "udp", 3, 0) == 3 && read_is(u_rx, "udp"), "udp-connected", "see above");
    /* The test connects from outside now. */
    printf("accepting\n");
    fflush(stdout);
    int ext = accept(srv, NULL, NULL);
    CHECK(ext >= 0 && read_is(ext, "ping\n") && send(ext, "pong\n", 5, 0) == 5, "tcp-new-client", "ext %d", ext);
    return bad;
}

/* Wait until the peer has closed its side (its FIN arrived). */
static void wait_peer_closed(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    while (!(p.revents & POLLRDHUP))
        if (poll(&p, 1, 5000) <= 0) die("peer never closed");
}

static int read_eof(int fd) {
    char b;
    return recv(fd, &b, 1, 0) == 0;
}

static int halfclosed(void) {
    int srv = listen_on(0);
    int port = port_of(srv);
    pid_t child = fork();
    if (child == 0) {
        int c = connect_to(port);
        send(c, "request", 7, 0);
        shutdown(c, SHUT_WR);
        wait_for_go();
        int ok = read_is(c, "answer") && read_eof(c);
        /* Its sending side stays shut. */
        ok = ok && send(c, "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE;
        _exit(ok ? 0 : 1);
    }
    int acc = accept(srv, NULL, NULL);
    wait_peer_closed(acc);
    wait_go();
    CHECK(read_is(acc, "request") && read_eof(acc), "tcp-halfclosed-request", "see above");
    CHECK(send(acc, "answer", 6, MSG_NOSIGNAL) == 6 && shutdown(acc, SHUT_WR) == 0, "tcp-halfclosed-answer", "send");
    int st;
    waitpid(child, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tcp-halfclosed-child", "status %x", st);
    return bad;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "pair";
    int r = 0;
    if (strcmp(mode, "pair") == 0) {
        r = pair();
    } else if (strcmp(mode, "server") == 0) {
        int s = listen_on(0);
        FILE *f = fopen(argv[2], "w");
        fprintf(f, "%d\n", port_of(s));
        fclose(f);
        printf("listening\n");
        for (;;) {
            int c = accept(s, NULL, NULL);
            (void)c;
        }
    } else if (strcmp(mode, "noaccept") == 0) {
        int s = listen_on(0);
        FILE *f = fopen(argv[2], "w");
        fprintf(f, "%d\n", port_of(s));
        fclose(f);
        wait_go();
        int c = accept(s, NULL, NULL);
        CHECK(c >= 0 && read_is(c, "ping\n") && send(c, "pong\n", 5, 0) == 5, "tcp-accepts-after", "accept %d", c);
        r = bad;
    } else if (strcmp(mode, "halfclosed") == 0) {
        r = halfclosed();
    } else if (strcmp(mode, "closewait") == 0) {
        int c = connect_to(atoi(argv[2]));
        wait_peer_closed(c);
        wait_go();
        CHECK(read_is(c, "last words") && read_eof(c), "tcp-peer-closed", "see above");
        r = bad;
    } else {
        int c = connect_to(atoi(argv[2]));
        wait_go();
        char b[8];
        ssize_t n = recv(c, b, sizeof b, 0);
        CHECK(n < 0 && errno == ECONNRESET, "tcp-reset", "recv gave %zd", n);
        r = bad;
    }
    printf("done %s\n", r ? "with failures" : "ok");
    return r;
}
