/* A child subreaper whose grandchild was orphaned and reparented to it.
 * The grandchild ticks and exits 5; the subreaper reaps it at the end.
 * Usage: subreaper TICKS DELAY_MS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 60;
    int delay = argc > 2 ? atoi(argv[2]) : 50;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t middle = fork();
    if (middle == 0) {
        pid_t g = fork();
        if (g == 0) {
            for (int i = 1; i <= ticks; i++) {
                struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
                nanosleep(&d, NULL);
                printf("orphan tick %d ppid %d\n", i, (int)getppid());
                fflush(stdout);
            }
            _exit(5);
        }
        printf("grandchild %d\n", (int)g);
        fflush(stdout);
        _exit(0);
    }
    waitpid(middle, NULL, 0);
    printf("middle reaped\n");
    fflush(stdout);
    int st;
    pid_t r = waitpid(-1, &st, 0);
    printf("reaped orphan %d exit %d\n", (int)r, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    printf("done\n");
    return 0;
}
