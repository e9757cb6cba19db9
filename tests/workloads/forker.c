/* Forks all the time: child number i sleeps a little and exits with i % 256;
 * the parent reaps with WNOHANG and checks each status belongs to that pid.
 * Trees taken from it hold live children, zombies and a child being born.
 * Usage: forker SPAWNS */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXKIDS 4096

static void nap_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv) {
    int spawns = argc > 1 ? atoi(argv[1]) : 1000;
    if (spawns > MAXKIDS) spawns = MAXKIDS;
    static pid_t pid_of[MAXKIDS + 1];
    int reaped = 0;
    for (int i = 1; i <= spawns || reaped < spawns; i++) {
        if (i <= spawns) {
            pid_t c = fork();
            if (c == 0) {
                nap_us(20000 + (i % 7) * 3000);
                _exit(i % 256);
            }
            pid_of[i] = c;
            printf("spawn %d pid %d\n", i, (int)c);
        }
        int st;
        pid_t r;
        while ((r = waitpid(-1, &st, WNOHANG)) > 0) {
            int k = 0;
            for (int j = 1; j <= spawns; j++)
                if (pid_of[j] == r) k = j;
            if (k == 0 || !WIFEXITED(st) || WEXITSTATUS(st) != k % 256)
                printf("BAD reaped %d status %#x (child %d)\n", (int)r, st, k);
            pid_of[k] = 0;
            reaped++;
            printf("reap %d\n", reaped);
        }
        fflush(stdout);
        nap_us(2000);
    }
    printf("done %d\n", reaped);
    return 0;
}
