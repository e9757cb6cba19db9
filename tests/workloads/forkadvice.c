/* forkadvice: memory marked MADV_WIPEONFORK and MADV_DONTFORK (a fork of the
 * process would not see it as it is), filled with a pattern; logs
 * "tick N sum S pid P" every 50 ms for COUNT ticks, then "done".
 *
 * usage: forkadvice COUNT [late]
 *
 * S covers both areas and must stay the same across a checkpoint/restart.
 * With "late" the areas start without advice; SIGUSR1 gives each whole area
 * its advice (its line in /proc/PID/maps stays the same: guard pages keep
 * it apart from its neighbours), rewrites both, and logs "advised".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guarded.h"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

static volatile sig_atomic_t advise_now;

static void on_usr1(int sig)
{
    (void)sig;
    advise_now = 1;
}

static void fill(uint64_t *a, uint64_t *b, size_t words, uint64_t seed)
{
    for (size_t i = 0; i < words; i++) {
        a[i] = (i + seed) * 0x9E3779B97F4A7C15ULL;
        b[i] = ~a[i];
    }
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100;
    int late = argc > 2 && strcmp(argv[2], "late") == 0;
    size_t n = 8 << 20;
    uint64_t *a = guarded(n);
    uint64_t *b = guarded(n);
    if (late)
        signal(SIGUSR1, on_usr1);
    else if (madvise(a, n, MADV_WIPEONFORK) || madvise(b, n, MADV_DONTFORK))
        return 1;
    fill(a, b, n / 8, 0);
    for (long t = 1; t <= count; t++) {
        if (advise_now) {
            advise_now = 0;
            if (madvise(a, n, MADV_WIPEONFORK) || madvise(b, n, MADV_DONTFORK))
                return 1;
            fill(a, b, n / 8, 7);
            printf("advised\n");
        }
        uint64_t sum = 0;
        for (size_t i = 0; i < n / 8; i += 64)
            sum += a[i] * 3 + b[i];
        printf("tick %ld sum %016llx pid %d\n", t, (unsigned long long)sum, (int)getpid());
        fflush(stdout);
        struct timespec ts = { 0, 50 * 1000000L };
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    printf("done\n");
    return 0;
}
