/* ticker: log "tick N pid P" to stdout every INTERVAL_MS, then exit with EXITCODE.
 *
 * usage: ticker INTERVAL_MS COUNT EXITCODE [nodump] [sigusr1]
 *   COUNT 0      tick forever
 *   nodump       prctl(PR_SET_DUMPABLE, 0) first (cryo must refuse it)
 *   sigusr1      install a SIGUSR1 handler; on SIGUSR1 log "got SIGUSR1" and exit 9
 *
 * Output goes through fd 1 with write(2), i.e. through whatever fd the process
 * had at start (a log file opened by the test without O_APPEND).
 * The last line is "exit CODE". Without a handler installed nanosleep must never
 * fail with EINTR: if it does, "EINTR" is logged and the process exits 4.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

static void logline(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(1, p, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(2);
        }
        p += w;
        n -= (int)w;
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ticker INTERVAL_MS COUNT EXITCODE [nodump] [sigusr1]\n");
        return 1;
    }
    long interval = atol(argv[1]);
    long count = atol(argv[2]);
    int code = atoi(argv[3]);
    int want_usr1 = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "nodump")) {
            if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
                perror("prctl");
                return 1;
            }
        } else if (!strcmp(argv[i], "sigusr1")) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = on_usr1;
            sigemptyset(&sa.sa_mask);
            if (sigaction(SIGUSR1, &sa, NULL) != 0) {
                perror("sigaction");
                return 1;
            }
            want_usr1 = 1;
        } else {
            fprintf(stderr, "unknown flag %s\n", argv[i]);
            return 1;
        }
    }
    for (long i = 1; count == 0 || i <= count; i++) {
        logline("tick %ld pid %d\n", i, (int)getpid());
        struct timespec ts = { interval / 1000, (interval % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) != 0) {
            if (errno != EINTR || !want_usr1) {
                logline("EINTR in nanosleep at tick %ld errno %d\n", i, errno);
                return 4;
            }
            if (got_usr1) {
                logline("got SIGUSR1\n");
                return 9;
            }
        }
        if (got_usr1) {
            logline("got SIGUSR1\n");
            return 9;
        }
    }
    logline("exit %d\n", code);
    return code;
}
