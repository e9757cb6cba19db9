/* Memory the kernel reads and writes on the program's behalf, for a lazy
 * restart (tests/tests/restore.rs). usage: lazy MIB
 *
 * Fills two MIB MiB buffers A and B, a 4 MiB one C and a few thousand small
 * heap blocks with known patterns, prints "ready" and waits for a file "go"
 * (after the restart). Then, in this order, each step touching its memory
 * through a syscall first, so that the kernel meets the missing pages before
 * the program does: write() of all of A to a file and pread() of it back
 * into B; a check of A and the small blocks in place; sendmsg of a slice of
 * C over a socketpair (the buffer is behind an iovec) and recv of it into
 * B; a thread (clone3) that checks A; a forked child that checks A and C. Each step prints
 * "OK <what>" or "BAD <what>: ...", then "done". */
#define _GNU_SOURCE
#include "selfcheck.h"
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>

#define SMALL 4000

static uint64_t *a, *b, *c;
static size_t words, cwords = (4 << 20) / 8;
static uint64_t *small[SMALL];

static uint64_t pat(uint64_t i, uint64_t seed) {
    return (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
}

/* Index of the first word of p[from..to) that is not pattern `seed`, or -1. */
static long first_bad(const uint64_t *p, size_t from, size_t to, uint64_t seed) {
    for (size_t i = from; i < to; i++)
        if (p[i] != pat(i, seed))
            return (long)i;
    return -1;
}

static int small_ok(void) {
    for (int k = 0; k < SMALL; k++)
        for (int j = 0; j < 16; j++)
            if (small[k][j] != pat(k * 16 + j, 7))
                return 0;
    return 1;
}

static void *checker(void *arg) {
    (void)arg;
    return (void *)(intptr_t)first_bad(a, 0, words, 1);
}

int main(int argc, char **argv) {
    if (argc != 2)
        die("usage: lazy MIB");
    size_t bytes = (size_t)atol(argv[1]) << 20;
    words = bytes / 8;
    a = malloc(bytes);
    b = malloc(bytes);
    c = malloc(cwords * 8);
    if (!a || !b || !c)
        die("malloc");
    for (size_t i = 0; i < words; i++) {
        a[i] = pat(i, 1);
        b[i] = pat(i, 2);
    }
    for (size_t i = 0; i < cwords; i++)
        c[i] = pat(i, 3);
    for (int k = 0; k < SMALL; k++) {
        small[k] = malloc(16 * 8);
        for (int j = 0; j < 16; j++)
            small[k][j] = pat(k * 16 + j, 7);
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair");
    wait_go();

    int fd = open("a.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("open a.bin");
    ssize_t w = write(fd, a, bytes);
    ssize_t r = pread(fd, b, bytes, 0);
    long bad_b = first_bad(b, 0, words, 1);
    CHECK(w == (ssize_t)bytes && r == (ssize_t)bytes && bad_b < 0, "write and read", "wrote %zd, read %zd, first bad word %ld", w, r, bad_b);
    close(fd);

    long bad_a = first_bad(a, 0, words, 1);
    CHECK(bad_a < 0 && small_ok(), "in place", "first bad word of A %ld, small blocks %s", bad_a, small_ok() ? "ok" : "bad");

    /* The middle of C, behind an iovec: the kernel copies from it. */
    size_t mid = cwords / 2, slice = 8192;
    struct iovec iov = {c + mid, slice * 8};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t sent = sendmsg(sv[0], &msg, 0);
    ssize_t got = 0;
    while (sent > 0 && got < sent) {
        ssize_t n = recv(sv[1], (char *)b + got, sent - got, 0);
        if (n <= 0)
            break;
        got += n;
    }
    long bad_c = -1;
    for (size_t i = 0; i < slice && bad_c < 0; i++)
        if (b[i] != pat(mid + i, 3))
            bad_c = (long)i;
    CHECK(sent == (ssize_t)(slice * 8) && got == sent && bad_c < 0, "sendmsg", "sent %zd, received %zd, first bad word %ld", sent, got, bad_c);

    pthread_t t;
    void *res = (void *)-2;
    int e = pthread_create(&t, NULL, checker, NULL);
    if (e == 0)
        pthread_join(t, &res);
    CHECK(e == 0 && res == (void *)-1, "thread", "pthread_create %d, first bad word %ld", e, (long)(intptr_t)res);

    pid_t child = fork();
    if (child == 0)
        _exit(first_bad(a, 0, words, 1) < 0 && first_bad(c, 0, cwords, 3) < 0 && small_ok() ? 0 : 1);
    int st = -1;
    waitpid(child, &st, 0);
    CHECK(child > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork", "child status %#x", st);
    printf("done\n");
    fflush(stdout);
    return bad;
}
