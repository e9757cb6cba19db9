/* A tree to migrate between hosts, checking itself as it goes.
 * usage: migrant LOG MIB
 *
 * The root fills MIB MiB with a pattern (every page), forks a "piper" that
 * sends numbered messages over a pipe, a TCP "server" on 127.0.0.1 and a
 * "client" connected to it (both in the tree) that sends numbers and expects
 * each back plus one. The root reads the pipe, checks the numbers run on
 * without gap and that sampled pages still hold their pattern, and rewrites
 * a few pages per tick (a low dirty rate), drops one (MADV_DONTNEED: it must
 * read as zero until written again) and grows the heap now and then. A table
 * of the generation each page holds lets SIGUSR1 check every page ("full N
 * ok" or BAD lines): a page left at an older content is found. Every line names the network
 * namespace the process runs in, so the log shows on which "host" it ran:
 *   "tick N net:[INODE]", "tcp N net:[INODE]", any "BAD ..." on a mismatch. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int logfd;

static void say(const char *fmt, ...) {
    char net[64] = "?", line[256];
    ssize_t n = readlink("/proc/self/ns/net", net, sizeof net - 1);
    if (n > 0) net[n] = 0;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof line - 80, fmt, ap);
    va_end(ap);
    len += snprintf(line + len, sizeof line - len, " %s\n", net);
    /* One write of a whole line to an O_APPEND fd: lines never interleave. */
    if (write(logfd, line, len) != len) _exit(4);
}

static void nap(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int full(int fd, void *buf, size_t n, int writing) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, (char *)buf + done, n - done) : read(fd, (char *)buf + done, n - done);
        if (r <= 0) return -1;
        done += r;
    }
    return 0;
}

static uint64_t pattern(size_t page, uint64_t gen) { return page * 0x9e3779b97f4a7c15ull + gen; }

#define DROPPED UINT32_MAX
static volatile sig_atomic_t check_all;
static void on_usr1(int sig) { (void)sig; check_all = 1; }

/* Heap grown in steps of GROW bytes, each step filled with its number. */
#define GROW (16 * 4096)
static unsigned char *grown[4096];
static size_t ngrown;

static int page_ok(const uint64_t *mem, const uint32_t *gens, size_t p) {
    if (gens[p] == DROPPED) return mem[p * 512] == 0 && mem[p * 512 + 1] == 0;
    return mem[p * 512] == pattern(p, gens[p]) && mem[p * 512 + 1] == gens[p];
}

static void full_check(const uint64_t *mem, const uint32_t *gens, size_t pages, uint64_t tick) {
    size_t bad = 0, dropped = 0;
    for (size_t p = 0; p < pages; p++) {
        if (!page_ok(mem, gens, p) && bad++ < 5) say("BAD full page %zu gen %u", p, gens[p]);
        dropped += gens[p] == DROPPED;
    }
    for (size_t g = 0; g < ngrown; g++)
        for (size_t i = 0; i < GROW; i += 4096)
            if (grown[g][i] != (unsigned char)g && bad++ < 5) say("BAD heap step %zu", g);
    say("full %llu ok pages %zu dropped %zu heap-steps %zu bad %zu", (unsigned long long)tick, pages, dropped, ngrown, bad);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: migrant LOG MIB\n");
        return 2;
    }
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (logfd < 0) return 3;
    int pp[2];
    if (pipe(pp) < 0) return 3;
    if (fork() == 0) {
        close(pp[0]);
        for (uint64_t k = 1;; k++) {
            if (full(pp[1], &k, sizeof k, 1) < 0) _exit(0);
            nap(20);
        }
    }
    close(pp[1]);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4) < 0 || getsockname(ls, (struct sockaddr *)&a, &al) < 0)
        return 3;
    if (fork() == 0) {
        int c = accept(ls, NULL, NULL);
        uint64_t k;
        while (c >= 0 && full(c, &k, sizeof k, 0) == 0) {
            k++;
            if (full(c, &k, sizeof k, 1) < 0) break;
        }
        _exit(0);
    }
    if (fork() == 0) {
        close(ls);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
            say("BAD connect");
            _exit(1);
        }
        for (uint64_t k = 1;; k++) {
            uint64_t back;
            if (full(c, &k, sizeof k, 1) < 0 || full(c, &back, sizeof back, 0) < 0) {
                say("BAD tcp lost at %llu", (unsigned long long)k);
                _exit(1);
            }
            if (back != k + 1) say("BAD tcp %llu answered %llu", (unsigned long long)k, (unsigned long long)back);
            say("tcp %llu", (unsigned long long)k);
            nap(50);
        }
    }
    close(ls);
    /* Allocated after the forks: the memory is the root's alone. */
    size_t pages = (size_t)atol(argv[2]) * 256;
    uint64_t *mem = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *gens = mmap(NULL, pages * sizeof *gens, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || gens == MAP_FAILED) return 3;
    signal(SIGUSR1, on_usr1);
    /* Word 0 of a page: its pattern; word 1: the generation it was written in. */
    for (size_t p = 0; p < pages; p++) {
        mem[p * 512] = pattern(p, 0);
        mem[p * 512 + 1] = 0;
    }
    say("start pages %zu", pages);
    for (uint64_t want = 1;; want++) {
        uint64_t k;
        if (full(pp[0], &k, sizeof k, 0) < 0) {
            say("BAD pipe closed");
            return 1;
        }
        if (k != want) say("BAD pipe %llu expected %llu", (unsigned long long)k, (unsigned long long)want);
        /* Check a spread of pages, then rewrite four. */
        for (size_t i = 0; i < 64; i++) {
            size_t p = (want * 7919 + i * (pages / 64 + 1)) % pages;
            if (!page_ok(mem, gens, p)) say("BAD page %zu", p);
        }
        for (size_t i = 0; i < 4; i++) {
            size_t p = (want * 104729 + i) % pages;
            mem[p * 512 + 1] = want;
            mem[p * 512] = pattern(p, want);
            gens[p] = want;
        }
        size_t drop = (want * 15485863) % pages;
        madvise(mem + drop * 512, 4096, MADV_DONTNEED);
        gens[drop] = DROPPED;
        if (want % 10 == 0 && ngrown < sizeof grown / sizeof *grown) {
            unsigned char *g = sbrk(GROW);
            if (g != (void *)-1) {
                memset(g, (unsigned char)ngrown, GROW);
                grown[ngrown++] = g;
            }
        }
        if (check_all) {
            check_all = 0;
            full_check(mem, gens, pages, want);
        }
        say("tick %llu", (unsigned long long)want);
    }
}
