/* Three threads deadlocked on two mutexes (plus main joining), for comparing
 * `cryo core` with gdb's own `gcore` on a hung program, and for `cryo inspect`.
 * Main installs a SIGUSR1 handler (on_usr1) and blocks SIGUSR2 before starting
 * the workers (which inherit the mask), so signal state has known values.
 * Usage: deadlock  -- prints "deadlocked" once both workers hold a lock. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

pthread_mutex_t first = PTHREAD_MUTEX_INITIALIZER, second = PTHREAD_MUTEX_INITIALIZER;
volatile long answer = 424242;
static volatile int holding;
static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig) {
    (void)sig;
    usr1_seen = 1;
}

static void *take_first_then_second(void *arg) {
    (void)arg;
    pthread_mutex_lock(&first);
    __sync_fetch_and_add(&holding, 1);
    while (holding < 2) usleep(1000);
    pthread_mutex_lock(&second);
    return 0;
}

static void *take_second_then_first(void *arg) {
    (void)arg;
    pthread_mutex_lock(&second);
    __sync_fetch_and_add(&holding, 1);
    while (holding < 2) usleep(1000);
    pthread_mutex_lock(&first);
    return 0;
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, 0);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, 0);

    pthread_t a, b;
    pthread_create(&a, 0, take_first_then_second, 0);
    pthread_create(&b, 0, take_second_then_first, 0);
    while (holding < 2) usleep(1000);
    usleep(100000);
    printf("deadlocked\n");
    fflush(stdout);
    pthread_join(a, 0);
    pthread_join(b, 0);
    return 0;
}
