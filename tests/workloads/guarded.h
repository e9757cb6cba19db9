/* guarded(n): n bytes of read-write anonymous memory between two inaccessible
 * pages, so that the area keeps a line of its own in /proc/PID/maps (and its
 * own VmFlags in smaps) whatever is mapped next to it. Exits on failure. */
#ifndef GUARDED_H
#define GUARDED_H
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t *guarded(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, n + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + page, n, PROT_READ | PROT_WRITE))
        exit(1);
    return (uint64_t *)(m + page);
}
#endif
