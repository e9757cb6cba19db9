/* forktime MIB: fill MIB MiB of anonymous memory (4 KiB pages, as memtouch does), then
 * time fork() until it returns in the parent; prints seconds: the first fork, then the
 * median of four more. The floor of a low-freeze checkpoint's stop: its copy-on-write
 * snapshot is such a fork, whose cost is the copy of the page tables. The first fork
 * of memory the program wrote also write-protects every page (a first checkpoint);
 * later ones find them protected already (a checkpoint after another one). Each
 * fork starts with the caches full of other data, as a checkpoint's would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "anon.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t n = mib << 20;
    char *p = anon(n);
    memset(p, 0x5a, n);
    /* Written before each fork: a target waits a while before it is
     * checkpointed, and its page tables are no longer in the CPU's caches. */
    size_t other = 64 << 20;
    char *q = anon(other);
    double t[5];
    for (int i = 0; i < 5; i++) {
        memset(q, i + 1, other);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (c < 0) {
            perror("fork");
            return 1;
        }
        waitpid(c, NULL, 0);
        t[i] = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    }
    double first = t[0];
    qsort(t + 1, 4, sizeof t[0], cmp);
    printf("%.4f %.4f\n", first, (t[2] + t[3]) / 2);
    return 0;
}
