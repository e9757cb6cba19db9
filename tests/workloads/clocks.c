/* clocks LOG: every 20 ms, the time through every function glibc takes from the
 * vDSO (clock_gettime, gettimeofday, time, clock_getres, sched_getcpu), checked
 * against each other; logs "tick N ok" or "BAD tick N: ...". Before a restart
 * and after it the vDSO may be another one: the answers must stay right. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: clocks LOG\n");
        return 1;
    }
    FILE *log = fopen(argv[1], "w");
    if (!log) return 1;
    setvbuf(log, NULL, _IOLBF, 0);
    struct timespec last = {0, 0};
    for (long n = 1;; n++) {
        struct timespec mono, real, res;
        struct timeval tv;
        int bad = clock_gettime(CLOCK_MONOTONIC, &mono) != 0 || clock_gettime(CLOCK_REALTIME, &real) != 0 ||
                  gettimeofday(&tv, NULL) != 0 || clock_getres(CLOCK_MONOTONIC, &res) != 0;
        time_t t = time(NULL);
        int cpu = sched_getcpu();
        double back = (last.tv_sec - mono.tv_sec) + (last.tv_nsec - mono.tv_nsec) / 1e9;
        if (bad || back > 0 || labs(tv.tv_sec - real.tv_sec) > 1 || labs(t - real.tv_sec) > 1 || res.tv_sec != 0 || cpu < 0)
            fprintf(log, "BAD tick %ld: mono %ld.%09ld after %ld.%09ld, real %ld, tv %ld, time %ld, res %ld.%09ld, cpu %d\n", n,
                    (long)mono.tv_sec, mono.tv_nsec, (long)last.tv_sec, last.tv_nsec, (long)real.tv_sec, (long)tv.tv_sec,
                    (long)t, (long)res.tv_sec, res.tv_nsec, cpu);
        else
            fprintf(log, "tick %ld ok\n", n);
        last = mono;
        usleep(20000);
    }
}
