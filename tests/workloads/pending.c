/* Blocks SIGUSR1, says "ready", and ticks; at tick UNBLOCK it unblocks, so a
 * SIGUSR1 sent meanwhile (and pending across a checkpoint) runs its handler
 * then. Usage: pending TICKS UNBLOCK DELAY_MS */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t got;

static void on_usr1(int sig) { got++; (void)sig; }

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 100;
    int unblock = argc > 2 ? atoi(argv[2]) : 50;
    int delay = argc > 3 ? atoi(argv[3]) : 50;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    printf("ready\n");
    fflush(stdout);
    for (int i = 1; i <= ticks; i++) {
        struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&d, NULL);
        if (i == unblock) sigprocmask(SIG_UNBLOCK, &set, NULL);
        printf("tick %d got %d\n", i, (int)got);
        fflush(stdout);
    }
    printf("done got %d\n", (int)got);
    return 0;
}
