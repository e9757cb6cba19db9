/* locked: memory locked with mlock (66 pages) and with mlock2(MLOCK_ONFAULT)
 * (34 pages, half of them touched), filled with a pattern; logs
 * "tick N sum S pid P" every 50 ms for COUNT ticks, then "done".
 *
 * usage: locked COUNT [future|future-onfault]
 *
 * S covers both areas and must stay the same across a checkpoint/restart;
 * the test reads the areas' VmFlags ("lo", "lf") by their sizes. With
 * "future", it also calls mlockall(MCL_FUTURE [| MCL_ONFAULT]), and maps a
 * new area of 7 pages once a file "newmap" exists in its cwd (printing
 * "mapped"): that one is locked by the kernel alone.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "guarded.h"

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 100;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t na = 66 * page, nb = 34 * page;
    uint64_t *a = guarded(na), *b = guarded(nb);
    if (mlock(a, na) != 0 || syscall(SYS_mlock2, b, nb, MLOCK_ONFAULT) != 0) {
        perror("mlock");
        return 2;
    }
    for (size_t i = 0; i < na / 8; i++)
        a[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < nb / 16; i++)
        b[i] = (i + 7) * 0xC2B2AE3D27D4EB4FULL;
    const char *future = argc > 2 ? argv[2] : "";
    int mapped = !future[0];
    if (future[0] && mlockall(MCL_FUTURE | (future[6] ? MCL_ONFAULT : 0)) != 0) {
        perror("mlockall");
        return 2;
    }
    for (long n = 1; n <= count; n++) {
        if (!mapped && access("newmap", F_OK) == 0) {
            if (mmap(NULL, 7 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED) {
                perror("mmap");
                return 2;
            }
            mapped = 1;
            printf("mapped\n");
        }
        uint64_t sum = 0;
        for (size_t i = 0; i < na / 8; i++)
            sum = sum * 31 + a[i];
        for (size_t i = 0; i < nb / 8; i++)
            sum = sum * 31 + b[i];
        printf("tick %ld sum %llu pid %d\n", n, (unsigned long long)sum, (int)getpid());
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("done\n");
    fflush(stdout);
    return 0;
}
