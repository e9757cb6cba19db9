/* shared_writer: a child that shares a page of memory with its parent, which
 * keeps writing it.
 *
 * usage: shared_writer LOG
 *   The parent maps a shared anonymous page, forks, and then increments a
 *   counter in it every 20 us for as long as it lives. The child logs
 *   "child PID" once, then "tick N" every 10 ms to LOG.
 * A checkpoint of the child's tree alone cannot hold a consistent copy of
 * that page: its writer is outside the tree and is not frozen.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: shared_writer LOG\n");
        return 2;
    }
    volatile unsigned long *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        return 3;
    pid_t child = fork();
    if (child < 0)
        return 4;
    if (child > 0) {
        for (;;) {
            page[0]++;
            usleep(20);
        }
    }
    FILE *log = fopen(argv[1], "w");
    if (!log)
        return 5;
    setvbuf(log, NULL, _IOLBF, 0);
    fprintf(log, "child %d\n", getpid());
    for (unsigned long n = 0;; n++) {
        fprintf(log, "tick %lu seen %lu\n", n, page[0]);
        usleep(10000);
    }
}
