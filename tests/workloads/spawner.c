/* Creates and joins short-lived threads all the time, so a checkpoint always
 * races with thread creation. Usage: spawner ROUNDS
 * Logs "round N" (N = 1..ROUNDS) after each batch of 8 threads, then "done". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static volatile long total;

static void *work(void *arg) {
    for (int i = 0; i < 1000; i++)
        __sync_fetch_and_add(&total, 1);
    return arg;
}

int main(int argc, char **argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 100;
    for (long r = 1; r <= rounds; r++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            pthread_create(&t[i], 0, work, 0);
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], 0);
        if (total != r * 8000) {
            printf("BAD total %ld round %ld\n", total, r);
            return 3;
        }
        printf("round %ld\n", r);
        fflush(stdout);
        usleep(20000);
    }
    printf("done\n");
    return 0;
}
