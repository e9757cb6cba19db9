/* pidfds MODE: pidfds that must work after a restart, checked by the program.
 * Mode "tree": a pidfd (PIDFD_NONBLOCK) of a child that waits for SIGUSR1 and
 * then exits 7, a dup of it in a second child (one open file description), a
 * pidfd of a child that exited 5 and is not reaped (a zombie), and one of
 * itself opened with PIDFD_THREAD. After "go": the signal goes through the
 * pidfd, poll() sees the child exit, waitid(P_PIDFD) reports both exit
 * statuses, the flags are as they were, and the second child's copy refers to
 * the same process. Mode "outside": a pidfd of its parent, outside the tree
 * (which cryo must refuse). Mode "reaped": a pidfd of a child already reaped
 * (which cryo must refuse). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "selfcheck.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#define PIDFD_THREAD O_EXCL

static int pidfd_open(pid_t pid, unsigned flags) {
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
    (void)sig;
    usr1 = 1;
}

/* Exits with `status` once SIGUSR1 came (0: at once). */
static pid_t child(int status, int wait_usr1) {
    pid_t c = fork();
    if (c < 0) die("fork");
    if (c == 0) {
        if (wait_usr1) {
            while (!usr1) pause();
        }
        _exit(status);
    }
    return c;
}

static int tree(void) {
    /* Installed before the forks: a signal that comes early is not lost. */
    sigset_t usr;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1);
    signal(SIGUSR1, on_usr1);
    pid_t a = child(7, 1);
    pid_t z = child(5, 0);
    int fa = pidfd_open(a, O_NONBLOCK);
    int fz = pidfd_open(z, 0);
    int me = pidfd_open(getpid(), PIDFD_THREAD);
    if (fa < 0 || fz < 0 || me < 0) die("pidfd_open");
    /* A second holder of a's pidfd, inherited: it reports a's pid. */
    int to_parent[2];
    if (pipe(to_parent) < 0) die("pipe");
    pid_t holder = fork();
    if (holder == 0) {
        wait_for_go();
        char info[256], path[64];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fa);
        FILE *f = fopen(path, "r");
        int pid = -2;
        while (f && fgets(info, sizeof info, f))
            sscanf(info, "Pid: %d", &pid);
        dprintf(to_parent[1], "%d\n", pid);
        _exit(0);
    }
    /* Until z has exited: a zombie from here on. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PID, z, &si, WEXITED | WNOWAIT) < 0) {}
    wait_go();

    char buf[32] = {0};
    ssize_t n = read(to_parent[0], buf, sizeof buf - 1);
    CHECK(n > 0 && atoi(buf) == a, "shared-description", "the holder's copy refers to %s, not %d", buf, (int)a);
    waitpid(holder, NULL, 0);
    CHECK(syscall(SYS_pidfd_send_signal, fa, SIGUSR1, NULL, 0) == 0, "send-signal", "pidfd_send_signal");
    struct pollfd p = {fa, POLLIN, 0};
    CHECK(poll(&p, 1, 10000) == 1 && (p.revents & POLLIN), "poll-exit", "poll %x", p.revents);
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PIDFD, fa, &si, WEXITED) == 0 && si.si_pid == a && si.si_status == 7, "waitid-child", "pid %d status %d", si.si_pid, si.si_status);
    memset(&si, 0, sizeof si);
    CHECK(waitid(P_PIDFD, fz, &si, WEXITED | WNOHANG) == 0 && si.si_pid == z && si.si_status == 5, "waitid-zombie", "pid %d status %d", si.si_pid, si.si_status);
    int fl = fcntl(fa, F_GETFL), flz = fcntl(fz, F_GETFL), flme = fcntl(me, F_GETFL);
    CHECK((fl & O_NONBLOCK) && !(flz & O_NONBLOCK) && (flme & PIDFD_THREAD) && !(fl & PIDFD_THREAD), "flags", "a %o z %o me %o", fl, flz, flme);
    CHECK(syscall(SYS_pidfd_send_signal, me, 0, NULL, 0) == 0, "self", "signal 0 to itself through its pidfd");
    return bad;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "tree";
    if (strcmp(mode, "tree") == 0) {
        int r = tree();
        printf("done %s\n", r ? "with failures" : "ok");
        return r;
    }
    if (strcmp(mode, "outside") == 0) {
        if (pidfd_open(getppid(), 0) < 0) die("pidfd_open");
    } else {
        pid_t c = child(0, 0);
        if (pidfd_open(c, 0) < 0) die("pidfd_open");
        waitpid(c, NULL, 0);
    }
    wait_go();
    printf("done ok\n");
    return 0;
}
