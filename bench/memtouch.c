/* memtouch MIB [PAGES_PER_SEC [FORKS]]: fill MIB MiB of anonymous memory with non-zero
 * data, fork FORKS children that share it (default none), and each print "ready",
 * then sleep (the checkpoint target for bench/run.sh), or with
 * PAGES_PER_SEC keep rewriting that many pages a second, one after the other (a
 * steady dirty rate, for migration). Each SIGUSR1 rewrites 1% of the pages (every
 * 100th) and prints "dirtied N". */
#include <time.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "anon.h"

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t n = mib << 20;
    uint64_t *p = anon(n);
    for (size_t i = 0; i < n / 8; i++)
        p[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    size_t forks = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
    for (size_t k = 0; k < forks && fork() != 0; k++)
        ;
    printf("ready %zu MiB pid %d\n", mib, (int)getpid());
    fflush(stdout);
    size_t rate = argc > 2 ? strtoul(argv[2], NULL, 10) : 0, next = 0;
    for (uint64_t round = 1;; round++) {
        int sig;
        if (rate) {
            /* Every 10 ms, a hundredth of a second's pages. */
            struct timespec tick = {0, 10 * 1000 * 1000};
            sig = sigtimedwait(&set, NULL, &tick);
            if (sig < 0) {
                for (size_t k = 0; k < (rate + 99) / 100; k++, next = (next + 1) % (n / 4096))
                    p[next * 512] += 1;
                round--;
                continue;
            }
        } else if (sigwait(&set, &sig) != 0)
            return 1;
        size_t pages = n / 4096, dirtied = 0;
        for (size_t pg = 0; pg < pages; pg += 100, dirtied++)
            for (size_t w = 0; w < 4096 / 8; w++)
                p[pg * 512 + w] ^= round;
        printf("dirtied %zu round %llu\n", dirtied, (unsigned long long)round);
        fflush(stdout);
    }
}
