/* Daemonizes the classic way: fork, setsid in the child, fork again, and
 * both parents exit; the daemon's session leader is gone. The daemon ticks,
 * printing its own session and process group.
 * Usage: daemon TICKS DELAY_MS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 60;
    int delay = argc > 2 ? atoi(argv[2]) : 50;
    pid_t c = fork();
    if (c > 0) {
        waitpid(c, NULL, 0);
        return 0;
    }
    setsid();
    if (fork() > 0) _exit(0);
    printf("daemon %d sid %d pgid %d\n", (int)getpid(), (int)getsid(0), (int)getpgid(0));
    fflush(stdout);
    for (int i = 1; i <= ticks; i++) {
        struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&d, NULL);
        printf("tick %d sid %d pgid %d\n", i, (int)getsid(0), (int)getpgid(0));
        fflush(stdout);
    }
    printf("done\n");
    return 0;
}
