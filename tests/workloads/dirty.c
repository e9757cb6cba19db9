/* dirty: a large buffer of which each step rewrites only a few pages, for
 * incremental checkpoints.
 *
 * usage: dirty LOGPATH STEPS SLEEP_MS MIB PAGES_PER_STEP [DROP_EVERY]
 *
 * Lines: "start pid P", then "step N checksum X pid P" for N = 1..STEPS, then
 * "done pid P". Step N rewrites PAGES_PER_STEP pages spread over the buffer
 * (which ones depends on N) and checksums the whole buffer, so a page that an
 * incremental image took from the wrong image changes every later checksum.
 * With DROP_EVERY, every DROP_EVERY-th step first drops 4 MiB of the buffer
 * (MADV_DONTNEED, aligned so that whole page tables go too), which then reads
 * as zero: an image must not bring back what those pages held before.
 * The values depend only on the arguments, never on timing: an uninterrupted
 * run with SLEEP_MS 0 is the reference. The log is written through an fd
 * without O_APPEND, so a restart rewrites the lines after its checkpoint.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

static int logfd = -1;

static void logline(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(logfd, s, n);
        if (w < 0)
            _exit(2);
        s += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: dirty LOGPATH STEPS SLEEP_MS MIB PAGES_PER_STEP [DROP_EVERY]\n");
        return 1;
    }
    long steps = atol(argv[2]), sleep_ms = atol(argv[3]), mib = atol(argv[4]), per = atol(argv[5]);
    long drop_every = argc == 7 ? atol(argv[6]) : 0;
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0)
        return 1;
    size_t words = ((size_t)mib << 20) / 8, page_words = 4096 / 8, pages = words / page_words;
    const size_t window = 4 << 20;
    char *area = mmap(NULL, words * 8 + window, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED || (drop_every > 0 && mib < 4))
        return 1;
    uint64_t *b = (uint64_t *)(((uintptr_t)area + window - 1) & ~(uintptr_t)(window - 1));
    for (size_t i = 0; i < words; i++)
        b[i] = i * 0x9E3779B97F4A7C15ULL;
    char line[128];
    snprintf(line, sizeof line, "start pid %d\n", (int)getpid());
    logline(line);
    for (long step = 1; step <= steps; step++) {
        if (drop_every > 0 && step % drop_every == 0) {
            size_t windows = words * 8 / window;
            if (madvise((char *)b + (size_t)(step / drop_every) % windows * window, window, MADV_DONTNEED) != 0)
                return 1;
        }
        for (long k = 0; k < per; k++) {
            size_t page = ((size_t)step * 7919 + (size_t)k * 104729) % pages;
            for (size_t w = 0; w < page_words; w++)
                b[page * page_words + w] = b[page * page_words + w] * 6364136223846793005ULL + (uint64_t)step;
        }
        uint64_t sum = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < words; i += 8)
            sum = (sum ^ b[i]) * 0x100000001b3ULL;
        snprintf(line, sizeof line, "step %ld checksum %016llx pid %d\n", step, (unsigned long long)sum, (int)getpid());
        logline(line);
        if (sleep_ms > 0) {
            struct timespec ts = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
            while (nanosleep(&ts, &ts) != 0)
                ;
        }
    }
    snprintf(line, sizeof line, "done pid %d\n", (int)getpid());
    logline(line);
    return 0;
}
