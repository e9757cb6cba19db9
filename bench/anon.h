/* anon(n): n bytes of fresh private anonymous memory; exits on failure. */
#ifndef ANON_H
#define ANON_H
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

static void *anon(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}
#endif
