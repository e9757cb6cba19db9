/* A parent and three children: each child sends numbered messages over its
 * own pipe and counts them in a shared anonymous counter; the parent reads
 * slower than they write (so the pipes hold bytes), checks every child's
 * numbers run on without gap or repeat, and that the shared counter is never
 * behind what it received. At the end it reaps the children by pid.
 * Usage: tree_pipes MSGS_PER_CHILD DELAY_MS */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KIDS 3

static void nap(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    int delay = argc > 2 ? atoi(argv[2]) : 10;
    long *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) return 2;
    int rd[KIDS];
    pid_t kid[KIDS];
    for (int i = 0; i < KIDS; i++) {
        int p[2];
        if (pipe(p) != 0) return 2;
        pid_t c = fork();
        if (c == 0) {
            close(p[0]);
            for (int s = 1; s <= n; s++) {
                char m[64];
                int len = snprintf(m, sizeof m, "%d %d\n", i, s);
                __atomic_add_fetch(shared, 1, __ATOMIC_SEQ_CST);
                if (write(p[1], m, len) != len) _exit(3);
                nap(delay);
            }
            _exit(0);
        }
        close(p[1]);
        rd[i] = p[0];
        kid[i] = c;
        printf("child %d pid %d\n", i, (int)c);
    }
    fflush(stdout);
    int last[KIDS] = {0}, open_pipes = KIDS;
    long total = 0;
    char buf[KIDS][256];
    int have[KIDS] = {0};
    while (open_pipes > 0) {
        nap(3 * delay);
        for (int i = 0; i < KIDS; i++) {
            if (rd[i] < 0) continue;
            struct pollfd pf = {rd[i], POLLIN, 0};
            if (poll(&pf, 1, 0) <= 0) continue;
            ssize_t got = read(rd[i], buf[i] + have[i], sizeof buf[i] - 1 - have[i]);
            if (got <= 0) {
                close(rd[i]);
                rd[i] = -1;
                open_pipes--;
                continue;
            }
            have[i] += got;
            char *line = buf[i], *nl;
            while ((nl = memchr(line, '\n', buf[i] + have[i] - line)) != NULL) {
                *nl = 0;
                int who, seq;
                if (sscanf(line, "%d %d", &who, &seq) != 2 || who != i || seq != last[i] + 1)
                    printf("BAD child %d sent '%s' after %d\n", i, line, last[i]);
                last[i] = seq;
                total++;
                long seen = __atomic_load_n(shared, __ATOMIC_SEQ_CST);
                if (seen < total) printf("BAD shared counter %ld behind %ld\n", seen, total);
                printf("msg %ld child %d seq %d\n", total, i, seq);
                line = nl + 1;
            }
            have[i] -= line - buf[i];
            memmove(buf[i], line, have[i]);
        }
        fflush(stdout);
    }
    for (int i = 0; i < KIDS; i++) {
        int st;
        pid_t r = waitpid(kid[i], &st, 0);
        printf("reaped %d status %d\n", (int)r, r == kid[i] && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    printf("done %ld shared %ld\n", total, *shared);
    return 0;
}
