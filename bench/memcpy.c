/* memcpy MIB: time one memcpy of MIB MiB between two pre-faulted buffers; prints seconds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t n = mib << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) {
        perror("malloc");
        return 1;
    }
    for (size_t i = 0; i < n; i += 4096) {
        a[i] = (char)i;
        b[i] = 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memcpy(b, a, n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    volatile char sink = b[n / 2];
    (void)sink;
    printf("%.3f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
