/* memtouch MIB: fill MIB MiB of anonymous memory with non-zero data, print "ready",
 * then sleep in a loop (the checkpoint target for bench/run.sh). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    size_t n = mib << 20;
    uint64_t *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < n / 8; i++)
        p[i] = (i + 1) * 0x9E3779B97F4A7C15ULL;
    printf("ready %zu MiB pid %d\n", mib, (int)getpid());
    fflush(stdout);
    for (;;)
        sleep(1);
}
