/* heap: mutate a large heap array deterministically and log a checksum per step.
 *
 * usage: heap LOGPATH STEPS SLEEP_MS MIB
 *
 * The log is written through an fd this program opens itself with
 * O_WRONLY|O_CREAT|O_TRUNC (no O_APPEND): if a restore puts the file offset in
 * the wrong place, lines get overwritten or gaps of NUL bytes appear.
 *
 * Lines:  "start pid P"  then  "step N checksum X pid P"  for N = 1..STEPS,
 * then "done pid P". The checksums depend only on STEPS/MIB, never on timing,
 * so an uninterrupted reference run (SLEEP_MS 0) yields the same sequence.
 *
 * Self-checks: the step count is kept four times -- on the stack, in the heap
 * block, in .data, and in a TLS variable (so a lost FS base or lost pages show up).
 * Any disagreement logs "MISMATCH ..." and exits 3. An interrupted nanosleep
 * (EINTR; this program has no signal handlers, so it must never see one) logs
 * "EINTR" and exits 4.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t data_counter = 1234; /* .data, not .bss */
static __thread uint64_t tls_counter;

struct block {
    uint64_t step;
    uint64_t nwords;
    uint64_t words[];
};

static int logfd = -1;

static void logline(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof buf)
        _exit(2);
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(logfd, p, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(2);
        }
        p += w;
        n -= (int)w;
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: heap LOGPATH STEPS SLEEP_MS MIB\n");
        return 1;
    }
    long steps = atol(argv[2]);
    long sleep_ms = atol(argv[3]);
    long mib = atol(argv[4]);
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        perror("open log");
        return 1;
    }
    uint64_t nwords = ((uint64_t)mib << 20) / 8;
    struct block *b = malloc(sizeof *b + nwords * 8);
    if (!b) {
        perror("malloc");
        return 1;
    }
    b->step = 0;
    b->nwords = nwords;
    for (uint64_t i = 0; i < nwords; i++)
        b->words[i] = i * 0x9E3779B97F4A7C15ULL;
    data_counter = 0;
    tls_counter = 0;

    logline("start pid %d\n", (int)getpid());
    for (long step = 1; step <= steps; step++) {
        uint64_t sum = 0xcbf29ce484222325ULL;
        for (uint64_t i = 0; i < nwords; i++) {
            uint64_t v = b->words[i] * 6364136223846793005ULL + (uint64_t)step + i;
            v ^= v >> 29;
            b->words[i] = v;
            sum = (sum ^ v) * 0x100000001b3ULL;
        }
        b->step++;
        data_counter++;
        tls_counter++;
        if (b->step != (uint64_t)step || data_counter != (uint64_t)step ||
            tls_counter != (uint64_t)step || b->nwords != nwords) {
            logline("MISMATCH step %ld heap %llu data %llu tls %llu\n", step,
                    (unsigned long long)b->step, (unsigned long long)data_counter,
                    (unsigned long long)tls_counter);
            return 3;
        }
        logline("step %ld checksum %016llx pid %d\n", step, (unsigned long long)sum,
                (int)getpid());
        if (sleep_ms > 0) {
            struct timespec ts = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
            if (nanosleep(&ts, NULL) != 0) {
                logline("EINTR in nanosleep at step %ld errno %d\n", step, errno);
                return 4;
            }
        }
    }
    logline("done pid %d\n", (int)getpid());
    return 0;
}
