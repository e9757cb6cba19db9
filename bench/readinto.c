/* readinto FILE...: read files into fresh anonymous memory (mmap, then
 * MADV_POPULATE_WRITE, then pread), as a restart must; prints seconds.
 * The floor of `cryo restart` beside plain reading from the page cache. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "anon.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

int main(int argc, char **argv)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        off_t n = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
        if (n <= 0)
            continue;
        char *p = anon(n);
        madvise(p, n, MADV_POPULATE_WRITE);
        for (off_t done = 0; done < n;) {
            ssize_t r = pread(fd, p + done, n - done > (1 << 30) ? (1 << 30) : n - done, done);
            if (r <= 0) {
                perror("pread");
                return 1;
            }
            done += r;
        }
        munmap(p, n);
        close(fd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.3f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
