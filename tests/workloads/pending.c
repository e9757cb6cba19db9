/* Blocks SIGUSR1 and SIGRTMIN+2, says "ready", and ticks; at tick UNBLOCK it
 * unblocks both, so signals sent meanwhile (and pending across a checkpoint)
 * run their handlers then. SIGUSR1 is counted; each SIGRTMIN+2 (sent with
 * sigqueue) adds its value and keeps its si_code and si_pid.
 * Usage: pending TICKS UNBLOCK DELAY_MS
 * Logs "tick N got USR1S rt RTS sum VALUES code SI_CODE pid SI_PID". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile sig_atomic_t got, rt, sum, code, from;

static void on_usr1(int sig) { got++; (void)sig; }

static void on_rt(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    rt++;
    sum += si->si_value.sival_int;
    code = si->si_code;
    from = si->si_pid;
}

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 100;
    int unblock = argc > 2 ? atoi(argv[2]) : 50;
    int delay = argc > 3 ? atoi(argv[3]) : 50;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    struct sigaction sr = {0};
    sr.sa_sigaction = on_rt;
    sr.sa_flags = SA_SIGINFO;
    sigaction(SIGRTMIN + 2, &sr, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    printf("ready\n");
    fflush(stdout);
    for (int i = 1; i <= ticks; i++) {
        struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&d, NULL);
        if (i == unblock) sigprocmask(SIG_UNBLOCK, &set, NULL);
        printf("tick %d got %d rt %d sum %d code %d pid %d\n", i, (int)got, (int)rt, (int)sum, (int)code, (int)from);
        fflush(stdout);
    }
    printf("done got %d rt %d sum %d code %d pid %d\n", (int)got, (int)rt, (int)sum, (int)code, (int)from);
    return 0;
}
