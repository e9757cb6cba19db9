/* A parent with two children it does not reap until the end: one exited
 * with status 7, one killed by SIGTERM. Meanwhile it ticks.
 * Usage: zombie TICKS DELAY_MS */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 100;
    int delay = argc > 2 ? atoi(argv[2]) : 50;
    pid_t exited = fork();
    if (exited == 0) _exit(7);
    pid_t killed = fork();
    if (killed == 0) {
        for (;;) pause();
    }
    kill(killed, SIGTERM);
    /* Wait until both are zombies, without reaping them. */
    for (int i = 0; i < 2; i++) {
        siginfo_t si;
        waitid(P_PID, i == 0 ? exited : killed, &si, WEXITED | WNOWAIT);
    }
    printf("children %d %d\n", (int)exited, (int)killed);
    fflush(stdout);
    for (int i = 1; i <= ticks; i++) {
        struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&d, NULL);
        printf("tick %d\n", i);
        fflush(stdout);
    }
    int st;
    pid_t r = waitpid(exited, &st, 0);
    printf("reaped %d exit %d\n", (int)r, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    r = waitpid(killed, &st, 0);
    printf("reaped %d signal %d\n", (int)r, WIFSIGNALED(st) ? WTERMSIG(st) : -1);
    printf("done\n");
    return 0;
}
