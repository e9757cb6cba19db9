/* What the self-checking workloads of tests/tests/fds.rs share: they set
 * up, print "ready", wait for the test to create a file "go" in their cwd
 * (after the restart), then check and print "OK <what>" or
 * "BAD <what>: ..." per check. */
#ifndef SELFCHECK_H
#define SELFCHECK_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int bad __attribute__((unused));
#define CHECK(cond, what, ...)                                                   \
    do {                                                                         \
        if (cond)                                                                \
            printf("OK %s\n", what);                                             \
        else {                                                                   \
            printf("BAD %s: ", what);                                            \
            printf(__VA_ARGS__);                                                 \
            printf(" (errno %d)\n", errno);                                      \
            bad = 1;                                                             \
        }                                                                        \
        fflush(stdout);                                                          \
    } while (0)

__attribute__((unused)) static void die(const char *what) {
    perror(what);
    exit(2);
}

__attribute__((unused)) static void wait_for_go(void) {
    while (access("go", F_OK) != 0)
        usleep(20000);
}

__attribute__((unused)) static void wait_go(void) {
    printf("ready\n");
    fflush(stdout);
    wait_for_go();
}
#endif
