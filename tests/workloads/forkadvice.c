/* forkadvice: memory marked MADV_WIPEONFORK and MADV_DONTFORK (a fork of the
 * process would not see it as it is), filled with a pattern; logs
 * "tick N sum S pid P" every 50 ms for COUNT ticks, then "done".
 *
 * usage: forkadvice COUNT
 *
 * S covers both areas and must stay the same across a checkpoint/restart.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100;
    size_t n = 8 << 20;
    uint64_t *a = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint64_t *b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED || madvise(a, n, MADV_WIPEONFORK) || madvise(b, n, MADV_DONTFORK))
        return 1;
    for (size_t i = 0; i < n / 8; i++) {
        a[i] = i * 0x9E3779B97F4A7C15ULL;
        b[i] = ~a[i];
    }
    for (long t = 1; t <= count; t++) {
        uint64_t sum = 0;
        for (size_t i = 0; i < n / 8; i += 64)
            sum += a[i] ^ b[i];
        printf("tick %ld sum %016llx pid %d\n", t, (unsigned long long)sum, (int)getpid());
        fflush(stdout);
        struct timespec ts = { 0, 50 * 1000000L };
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    printf("done\n");
    return 0;
}
