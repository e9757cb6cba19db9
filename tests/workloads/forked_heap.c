/* A parent fills MIB MiB of anonymous memory with a pattern no page shares
 * and forks two children; the first forks a grandchild. After the forks the
 * parent rewrites its first 8 pages, and each child rewrites 4 pages of its
 * own, so most memory stays shared since the fork and some does not. Every
 * process then checks, STEPS times (DELAY_MS apart), that its memory still
 * holds what it wrote, logging "NAME step N ok" (or "BAD ...") to stdout,
 * and "NAME done" at the end; the parent reaps its children. With "groups",
 * each child leads a process group of its own.
 * Usage: forked_heap MIB STEPS DELAY_MS [groups] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t *mem;
static size_t pages;

static void nap(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Page `p` as generation `gen` writes it. */
static void fill(size_t p, uint64_t gen) {
    uint64_t x = (p + 1) * 0x9E3779B97F4A7C15ull ^ gen;
    for (size_t i = 0; i < PAGE / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        mem[p * PAGE / 8 + i] = x;
    }
}

static uint64_t sum(void) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < pages * PAGE / 8; i++) h = (h ^ mem[i]) * 1099511628211ull;
    return h;
}

static void run(const char *name, int steps, int delay) {
    uint64_t want = sum();
    for (int s = 1; s <= steps; s++) {
        nap(delay);
        uint64_t got = sum();
        if (got != want)
            printf("BAD %s step %d: memory sum %llx, wrote %llx\n", name, s, (unsigned long long)got, (unsigned long long)want);
        else
            printf("%s step %d ok\n", name, s);
        fflush(stdout);
    }
}

/* A child that rewrites pages [first, first + 4) unless `gen` is 0. */
static int groups;

static pid_t child(const char *name, size_t first, uint64_t gen, int steps, int delay, int grandchild) {
    pid_t c = fork();
    if (c != 0) return c;
    if (groups) setpgid(0, 0);
    for (size_t p = first; gen && p < first + 4; p++) fill(p, gen);
    pid_t g = grandchild ? child("grandchild", 0, 0, steps, delay, 0) : 0;
    run(name, steps, delay);
    if (g > 0) waitpid(g, NULL, 0);
    printf("%s done\n", name);
    fflush(stdout);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    pages = (size_t)atoi(argv[1]) * 256;
    int steps = atoi(argv[2]), delay = atoi(argv[3]);
    groups = argc > 4 && strcmp(argv[4], "groups") == 0;
    mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 2;
    for (size_t p = 0; p < pages; p++) fill(p, 0);
    printf("pid %d at %p\n", (int)getpid(), (void *)mem);
    fflush(stdout);
    pid_t a = child("child1", 16, 1, steps, delay, 1);
    pid_t b = child("child2", 32, 2, steps, delay, 0);
    for (size_t p = 0; p < 8; p++) fill(p, 3);
    run("parent", steps, delay);
    int st;
    waitpid(a, &st, 0);
    waitpid(b, &st, 0);
    printf("parent done\n");
    fflush(stdout);
    return 0;
}
