/* signals: tick every 20 ms and report each signal it handles, with how it
 * was sent, so a test can tell that a signal sent during a checkpoint arrives
 * once, after it, with its siginfo intact.
 *
 * usage: signals LOG
 *   logs "tick N", and "got SIGNAME code C from P" for SIGTERM, SIGUSR1,
 *   SIGCHLD and SIGCONT (C: si_code, 0 = SI_USER from kill(2); P: si_pid).
 *   nanosleep failing with anything but EINTR is logged as "BAD".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NSIGS 4
static const int sigs[NSIGS] = { SIGTERM, SIGUSR1, SIGCHLD, SIGCONT };
static volatile sig_atomic_t count[NSIGS], code[NSIGS], from[NSIGS];

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    for (int i = 0; i < NSIGS; i++) {
        if (sigs[i] == sig) {
            code[i] = si->si_code;
            from[i] = si->si_pid;
            count[i]++;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: signals LOG\n");
        return 2;
    }
    FILE *log = fopen(argv[1], "w");
    if (!log)
        return 2;
    setvbuf(log, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < NSIGS; i++)
        sigaction(sigs[i], &sa, NULL);
    int seen[NSIGS] = { 0 };
    for (unsigned long n = 1;; n++) {
        fprintf(log, "tick %lu\n", n);
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
            fprintf(log, "BAD nanosleep errno %d\n", errno);
        for (int i = 0; i < NSIGS; i++) {
            while (seen[i] < count[i]) {
                seen[i]++;
                fprintf(log, "got %s code %d from %d\n", sigabbrev_np(sigs[i]), (int)code[i], (int)from[i]);
            }
        }
    }
}
