/* Four worker threads take turns (mutex + condition variable) incrementing a
 * shared counter; each checks the invariants itself. Main joins them.
 * Usage: threads STEPS DELAY_MS
 * Logs "step N thread I" for N = 1..STEPS, then "done"; any broken invariant
 * logs "BAD ..." and exits 3. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NTHREADS 4

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static long turn;          /* whose turn: turn % NTHREADS */
static long value;         /* must always equal turn */
static long steps, delay_ms;
static long done_by[NTHREADS];

static void *worker(void *arg) {
    long me = (long)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (turn < steps && turn % NTHREADS != me)
            pthread_cond_wait(&turn_changed, &lock);
        if (turn >= steps) {
            pthread_mutex_unlock(&lock);
            return 0;
        }
        if (value != turn) {
            printf("BAD value %ld turn %ld\n", value, turn);
            fflush(stdout);
            exit(3);
        }
        value++;
        turn++;
        done_by[me]++;
        printf("step %ld thread %ld\n", turn, me);
        fflush(stdout);
        pthread_cond_broadcast(&turn_changed);
        pthread_mutex_unlock(&lock);
        usleep(delay_ms * 1000);
    }
}

int main(int argc, char **argv) {
    steps = argc > 1 ? atol(argv[1]) : 100;
    delay_ms = argc > 2 ? atol(argv[2]) : 10;
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], 0, worker, (void *)i);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], 0);
    long sum = 0;
    for (int i = 0; i < NTHREADS; i++)
        sum += done_by[i];
    if (sum != steps || value != steps) {
        printf("BAD sum %ld value %ld steps %ld\n", sum, value, steps);
        return 3;
    }
    printf("done %ld\n", sum);
    return 0;
}
