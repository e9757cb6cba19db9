/* The fd table of a real program, checked by the program itself after a
 * restart. Mode "files": O_APPEND, O_PATH, O_DIRECTORY, a file deleted while
 * open, a sealed memfd, flock/POSIX/OFD locks, a FIFO with queued bytes,
 * /dev/null, /dev/zero, /dev/urandom. Mode "kernel": eventfd, timerfd,
 * signalfd, epoll, inotify, POSIX timers, itimers. Mode "netlink": a bound
 * rtnetlink socket in groups 24 and 33 with NETLINK_EXT_ACK, and one never
 * bound. Mode "netlink-unread": the reply to a dump waits unread in a
 * netlink socket, and mode "uffd": holds a userfaultfd (both of which cryo
 * must refuse). Mode "sockopts": TCP, UDP and Unix sockets with options set
 * (timeouts, linger, keepalive timing, buffer sizes, TTL, congestion
 * control...), each read again after the restart.
 * It sets everything up, prints "ready", waits for a file "go" in its cwd,
 * then checks and prints "OK <what>" or "BAD <what>: ...", then "done". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "selfcheck.h"


static void link_of(int fd, char *buf, size_t len) {
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, buf, len - 1);
    buf[n < 0 ? 0 : n] = 0;
}

static int files(void) {
    const char *text = "0123456789abcdefghijklmnopqrstuvwxyz";
    FILE *f = fopen("data.txt", "w");
    fputs(text, f);
    fclose(f);
    int data = open("data.txt", O_RDONLY);
    char buf[256];
    if (read(data, buf, 10) != 10) die("read data");
    int app = open("append.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    write(app, "before\n", 7);
    int path = open("data.txt", O_PATH);
    mkdir("adir", 0755);
    int dir = open("adir", O_RDONLY | O_DIRECTORY);
    close(open("adir/inside", O_CREAT | O_WRONLY, 0644));
    int del = open("scratch.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600);
    const char *secret = "contents of a file deleted while open";
    write(del, secret, strlen(secret));
    lseek(del, 11, SEEK_SET);
    unlink("scratch.tmp");
    int mfd = memfd_create("cryo-test-memfd", MFD_ALLOW_SEALING);
    write(mfd, "memfd bytes", 11);
    ftruncate(mfd, 4096);
    char *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (shared == MAP_FAILED) die("mmap memfd");
    strcpy(shared + 100, "through the mapping");
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    int l1 = open("lock1", O_RDWR | O_CREAT, 0644);
    if (flock(l1, LOCK_EX) < 0) die("flock");
    int l2 = open("lock2", O_RDWR | O_CREAT, 0644);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    if (fcntl(l2, F_SETLK, &fl) < 0) die("posix lock");
    int l3 = open("lock3", O_RDWR | O_CREAT, 0644);
    struct flock ofd = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100};
    if (fcntl(l3, F_OFD_SETLK, &ofd) < 0) die("ofd lock");
    mkfifo("fifo", 0600);
    int fifo = open("fifo", O_RDWR | O_NONBLOCK);
    write(fifo, "queued in the fifo", 18);
    int null = open("/dev/null", O_WRONLY);
    int zero = open("/dev/zero", O_RDONLY);
    int urnd = open("/dev/urandom", O_RDONLY);
    printf("fds data=%d app=%d path=%d dir=%d del=%d memfd=%d fifo=%d\n", data, app, path, dir, del, mfd, fifo);
    wait_go();

    CHECK(read(data, buf, 5) == 5 && memcmp(buf, "abcde", 5) == 0, "offset", "read %.5s", buf);
    CHECK(fcntl(app, F_GETFL) & O_APPEND, "append-flag", "flags %o", fcntl(app, F_GETFL));
    write(app, "after\n", 6);
    int n = pread(open("append.log", O_RDONLY), buf, sizeof buf - 1, 0);
    buf[n < 0 ? 0 : n] = 0;
    CHECK(strstr(buf, "after\n") && buf[n - 1] == '\n' && strstr(buf, "outside\n") < strstr(buf, "after\n"), "append-at-end", "log is %s", buf);
    struct stat a, b;
    stat("data.txt", &a);
    CHECK((fcntl(path, F_GETFL) & O_PATH) && fstat(path, &b) == 0 && a.st_ino == b.st_ino, "o-path", "flags %o", fcntl(path, F_GETFL));
    CHECK((fcntl(dir, F_GETFL) & O_DIRECTORY) && faccessat(dir, "inside", F_OK, 0) == 0, "o-directory", "flags %o", fcntl(dir, F_GETFL));
    fstat(del, &b);
    link_of(del, buf, sizeof buf);
    CHECK(b.st_nlink == 0 && strstr(buf, "(deleted)") != NULL, "deleted-unlinked", "nlink %ld link %s", (long)b.st_nlink, buf);
    CHECK(lseek(del, 0, SEEK_CUR) == 11, "deleted-offset", "offset %ld", (long)lseek(del, 0, SEEK_CUR));
    n = pread(del, buf, sizeof buf - 1, 0);
    buf[n < 0 ? 0 : n] = 0;
    CHECK(strcmp(buf, secret) == 0, "deleted-contents", "%s", buf);
    link_of(mfd, buf, sizeof buf);
    CHECK(strstr(buf, "memfd:cryo-test-memfd") != NULL, "memfd-name", "%s", buf);
    CHECK(fcntl(mfd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW), "memfd-seals", "seals %x", fcntl(mfd, F_GET_SEALS));
    n = pread(mfd, buf, 11, 0);
    buf[n < 0 ? 0 : n] = 0;
    CHECK(strcmp(buf, "memfd bytes") == 0 && ftruncate(mfd, 100) < 0, "memfd-contents", "%s", buf);
    n = pread(mfd, buf, 19, 100);
    buf[n < 0 ? 0 : n] = 0;
    strcpy(shared + 200, "after");
    char after[8] = {0};
    pread(mfd, after, 5, 200);
    CHECK(strcmp(buf, "through the mapping") == 0 && strcmp(after, "after") == 0, "memfd-mapped-same-object", "%s / %s", buf, after);
    pid_t me = getpid(), child = fork();
    if (child == 0) {
        /* Another process sees every lock held. */
        int r = 0;
        int o1 = open("lock1", O_RDWR);
        if (flock(o1, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) r |= 1;
        int o2 = open("lock2", O_RDWR);
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 1};
        if (fcntl(o2, F_GETLK, &q) < 0 || q.l_type != F_WRLCK || q.l_pid != me) r |= 2;
        int o3 = open("lock3", O_RDWR);
        struct flock q3 = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 150, .l_len = 1};
        if (fcntl(o3, F_OFD_GETLK, &q3) < 0 || q3.l_type != F_RDLCK || q3.l_start != 100) r |= 4;
        _exit(r);
    }
    int st;
    waitpid(child, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "locks", "child saw status %x", st);
    n = read(fifo, buf, sizeof buf - 1);
    buf[n < 0 ? 0 : n] = 0;
    CHECK(strcmp(buf, "queued in the fifo") == 0, "fifo-queued", "%s", buf);
    CHECK(write(null, "x", 1) == 1, "dev-null", "write failed");
    memset(buf, 1, 16);
    CHECK(read(zero, buf, 16) == 16 && buf[0] == 0 && buf[15] == 0, "dev-zero", "read failed");
    CHECK(read(urnd, buf, 16) == 16, "dev-urandom", "read failed");
    link_of(urnd, buf, sizeof buf);
    CHECK(strcmp(buf, "/dev/urandom") == 0, "dev-urandom-path", "%s", buf);
    return bad;
}

static volatile sig_atomic_t timer_hits, timer_bad_value, alarms;

static void on_timer(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    if (si->si_value.sival_int != 77) timer_bad_value = 1;
    timer_hits++;
}

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

static int kernel(void) {
    int sem = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
    int cnt = eventfd(0, 0);
    uint64_t v = 42;
    write(cnt, &v, 8);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec its = {.it_interval = {0, 200000000}, .it_value = {30, 0}};
    timerfd_settime(tfd, 0, &its, NULL);
    /* Set for a time of day, a minute from now. */
    int of_day = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    struct itimerspec at = {.it_value = {wall.tv_sec + 60, wall.tv_nsec}};
    if (timerfd_settime(of_day, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &at, NULL) < 0) die("timerfd time of day");
    int fired = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    struct itimerspec once = {.it_value = {0, 1000000}};
    timerfd_settime(fired, 0, &once, NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK);
    int ep = epoll_create1(0);
    int pp[2];
    pipe(pp);
    struct epoll_event e1 = {.events = EPOLLIN, .data.u64 = 0x1234};
    struct epoll_event e2 = {.events = EPOLLIN | EPOLLET, .data.u64 = 0x5678abcdULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, cnt, &e1);
    epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &e2);
    mkdir("watched", 0755);
    close(open("watched/f", O_CREAT | O_WRONLY, 0644));
    int ino = inotify_init1(IN_NONBLOCK);
    int wd1 = inotify_add_watch(ino, "watched", IN_CREATE);
    int wd2 = inotify_add_watch(ino, "watched/f", IN_MODIFY);
    struct sigaction sa = {.sa_sigaction = on_timer, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGRTMIN, &sa, NULL);
    struct sigaction al = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &al, NULL);
    timer_t t[3];
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN, .sigev_value.sival_int = 77};
    for (int i = 0; i < 3; i++)
        if (timer_create(CLOCK_MONOTONIC, &sev, &t[i]) < 0) die("timer_create");
    timer_delete(t[1]);
    struct itimerspec period = {.it_interval = {0, 50000000}, .it_value = {0, 50000000}};
    timer_settime(t[2], 0, &period, NULL);
    struct itimerspec idle = {.it_value = {100, 0}};
    timer_settime(t[0], 0, &idle, NULL);
    struct itimerval iv = {.it_interval = {0, 50000}, .it_value = {0, 50000}};
    setitimer(ITIMER_REAL, &iv, NULL);
    usleep(50000);
    printf("fds sem=%d cnt=%d tfd=%d sfd=%d ep=%d ino=%d wd=%d,%d timers=%ld,%ld\n", sem, cnt, tfd, sfd, ep, ino, wd1, wd2, (long)t[0], (long)t[2]);
    wait_go();

    int got = 0;
    while (read(sem, &v, 8) == 8 && v == 1) got++;
    CHECK(got == 5 && errno == EAGAIN, "eventfd-semaphore", "read %d ones", got);
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 0);
    CHECK(n == 1 && out[0].data.u64 == 0x1234 && out[0].events == EPOLLIN, "epoll-ready", "%d events, first data %llx", n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
    CHECK(read(cnt, &v, 8) == 8 && v == 42, "eventfd-count", "count %llu", (unsigned long long)v);
    write(pp[1], "p", 1);
    n = epoll_wait(ep, out, 4, 1000);
    CHECK(n == 1 && out[0].data.u64 == 0x5678abcdULL, "epoll-pipe", "%d events", n);
    struct itimerspec now;
    timerfd_gettime(tfd, &now);
    CHECK(now.it_interval.tv_nsec == 200000000 && now.it_value.tv_sec < 30 && now.it_value.tv_sec >= 20, "timerfd-settings", "interval %ld value %ld", now.it_interval.tv_nsec, (long)now.it_value.tv_sec);
    CHECK(read(fired, &v, 8) == 8 && v == 1, "timerfd-ticks", "ticks %llu", (unsigned long long)v);
    /* Still due at that time of day (a timer counting the time left from
     * the restart would be late by the time the program was down), and
     * still an absolute one that a clock change cancels. */
    struct itimerspec left;
    timerfd_gettime(of_day, &left);
    clock_gettime(CLOCK_REALTIME, &wall);
    double due = wall.tv_sec + wall.tv_nsec / 1e9 + left.it_value.tv_sec + left.it_value.tv_nsec / 1e9;
    double wanted = at.it_value.tv_sec + at.it_value.tv_nsec / 1e9;
    char info[64], fdinfo[512] = "";
    snprintf(info, sizeof info, "/proc/self/fdinfo/%d", of_day);
    FILE *fi = fopen(info, "r");
    if (fi) {
        fdinfo[fread(fdinfo, 1, sizeof fdinfo - 1, fi)] = 0;
        fclose(fi);
    }
    CHECK(due - wanted < 0.3 && wanted - due < 0.3 && strstr(fdinfo, "settime flags: 03"), "timerfd-time-of-day", "due %.3f s off, fdinfo %s", due - wanted, fdinfo);
    raise(SIGUSR2);
    struct signalfd_siginfo si;
    CHECK(read(sfd, &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2, "signalfd", "signo %u", si.ssi_signo);
    close(open("watched/new", O_CREAT | O_WRONLY, 0644));
    int fd = open("watched/f", O_WRONLY);
    write(fd, "m", 1);
    close(fd);
    char ib[4096];
    n = read(ino, ib, sizeof ib);
    int saw_create = 0, saw_modify = 0;
    for (char *p = ib; n > 0 && p < ib + n;) {
        struct inotify_event *ev = (struct inotify_event *)p;
        if (ev->wd == wd1 && (ev->mask & IN_CREATE) && strcmp(ev->name, "new") == 0) saw_create = 1;
        if (ev->wd == wd2 && (ev->mask & IN_MODIFY)) saw_modify = 1;
        p += sizeof *ev + ev->len;
    }
    CHECK(saw_create && saw_modify, "inotify", "create %d modify %d", saw_create, saw_modify);
    struct itimerspec tv;
    CHECK(timer_gettime(t[0], &tv) == 0 && tv.it_value.tv_sec > 50 && tv.it_value.tv_sec < 100, "posix-timer-idle", "left %ld", (long)tv.it_value.tv_sec);
    CHECK(timer_gettime(t[1], &tv) < 0 && errno == EINVAL, "posix-timer-deleted", "timer 1 exists");
    int before = timer_hits, alarms_before = alarms;
    for (int i = 0; i < 20; i++) usleep(20000);
    CHECK(timer_hits > before + 2 && !timer_bad_value, "posix-timer-fires", "hits %d -> %d, bad value %d", before, timer_hits, timer_bad_value);
    struct itimerval iv2;
    getitimer(ITIMER_REAL, &iv2);
    CHECK(alarms > alarms_before + 2 && iv2.it_interval.tv_usec == 50000, "itimer", "alarms %d -> %d interval %ld", alarms_before, alarms, (long)iv2.it_interval.tv_usec);
    return bad;
}

static unsigned port_id(int fd) {
    struct sockaddr_nl a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    return getsockname(fd, (struct sockaddr *)&a, &len) == 0 ? a.nl_pid : ~0u;
}

/* The groups it is in, as a bitmask of groups 1..64. */
static unsigned long long groups_of(int fd) {
    unsigned int words[2] = {0, 0};
    socklen_t len = sizeof words;
    if (getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words, &len) < 0) return 0;
    return words[0] | (unsigned long long)words[1] << 32;
}

/* An RTM_GETLINK dump answered to the end: the links it reported. */
static int dump_links(int fd) {
    struct { struct nlmsghdr h; struct ifinfomsg i; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = RTM_GETLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = 7;
    req.i.ifi_family = AF_UNSPEC;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return -1;
    static char buf[65536];
    int links = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != 7) continue;
            if (h->nlmsg_type == NLMSG_DONE) return links;
            if (h->nlmsg_type == NLMSG_ERROR) return -1;
            if (h->nlmsg_type == RTM_NEWLINK) links++;
        }
    }
}

static int netlink(void) {
    /* Groups of bridges (24: MDB, 33: VLANs): quiet where no bridge changes. */
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_groups = 1u << 23};
    int on = 1, group = 33;
    if (nl < 0 || bind(nl, (struct sockaddr *)&a, sizeof a) < 0) die("netlink bind");
    if (setsockopt(nl, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) die("NETLINK_ADD_MEMBERSHIP");
    if (setsockopt(nl, SOL_NETLINK, NETLINK_EXT_ACK, &on, sizeof on) < 0) die("NETLINK_EXT_ACK");
    int unbound = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE);
    if (unbound < 0) die("netlink socket");
    unsigned port = port_id(nl);
    unsigned long long groups = groups_of(nl);
    wait_go();
    CHECK(port_id(nl) == port && port != 0, "netlink-port-id", "%u instead of %u", port_id(nl), port);
    CHECK(groups_of(nl) == groups && groups == ((1ull << 23) | (1ull << 32)), "netlink-groups", "%llx instead of %llx", groups_of(nl), groups);
    int v = 0;
    socklen_t len = sizeof v;
    CHECK(getsockopt(nl, SOL_NETLINK, NETLINK_EXT_ACK, &v, &len) == 0 && v == 1, "netlink-options", "NETLINK_EXT_ACK %d", v);
    CHECK(fcntl(nl, F_GETFD) & FD_CLOEXEC && !(fcntl(unbound, F_GETFD) & FD_CLOEXEC), "netlink-cloexec", "close-on-exec flags");
    int links = dump_links(nl);
    CHECK(links >= 1, "netlink-dump", "%d links", links);
    CHECK(port_id(unbound) == 0 && dump_links(unbound) >= 1 && port_id(unbound) != 0, "netlink-unbound", "port id %u", port_id(unbound));
    return bad;
}

/* An option set by sockopts(), with its value as getsockopt gave it then. */
struct opt {
    const char *group, *name;
    int fd, level, opt;
    unsigned char value[64];
    socklen_t len;
};
static struct opt opts[64];
static int nopts;

/* Set an option and note it, or die; `optional`: skip it where this kernel
 * or user may not set it. */
static void setopt(const char *group, int fd, int level, int opt, const char *name, const void *v, socklen_t len, int optional) {
    if (setsockopt(fd, level, opt, v, len) < 0) {
        if (optional) return;
        die(name);
    }
    struct opt *o = &opts[nopts++];
    *o = (struct opt){.group = group, .name = name, .fd = fd, .level = level, .opt = opt, .len = sizeof o->value};
    if (getsockopt(fd, level, opt, o->value, &o->len) < 0) die(name);
}
#define SETINT(group, fd, level, opt, v) do { int v_ = (v); setopt(group, fd, level, opt, #opt, &v_, sizeof v_, 0); } while (0)

static void check_group(const char *group) {
    char what[64], why[256] = "";
    int ok = 1, n = 0;
    for (int i = 0; i < nopts; i++) {
        struct opt *o = &opts[i];
        if (strcmp(o->group, group) != 0) continue;
        n++;
        unsigned char now[64];
        socklen_t len = sizeof now;
        if (getsockopt(o->fd, o->level, o->opt, now, &len) < 0 || len != o->len || memcmp(now, o->value, len) != 0) {
            ok = 0;
            snprintf(why + strlen(why), sizeof why - strlen(why), "%s changed; ", o->name);
        }
    }
    snprintf(what, sizeof what, "sockopts-%s", group);
    CHECK(ok && n > 0, what, "%d options: %s", n, why);
}

static int tcp_listener(struct sockaddr_in *a) {
    socklen_t len = sizeof *a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (l < 0 || bind(l, (struct sockaddr *)a, sizeof *a) < 0 || listen(l, 4) < 0 || getsockname(l, (struct sockaddr *)a, &len) < 0) die("tcp listener");
    return l;
}

static int sockopts(void) {
    struct sockaddr_in a;
    struct timeval tv = {2, 500000};
    struct linger lg = {1, 7};
    /* A listener with options of its own. */
    int l2 = tcp_listener(&a);
    SETINT("tcp-listener", l2, SOL_SOCKET, SO_RCVBUF, 40000);
    SETINT("tcp-listener", l2, IPPROTO_TCP, TCP_DEFER_ACCEPT, 5);
    SETINT("tcp-listener", l2, IPPROTO_TCP, TCP_FASTOPEN, 5);
    SETINT("tcp-listener", l2, SOL_SOCKET, SO_PRIORITY, 3);
    setopt("tcp-listener", l2, SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO", &tv, sizeof tv, 0);
    /* A connection within the program. */
    int l = tcp_listener(&a);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int srv = accept(l, NULL, NULL);
    if (srv < 0) die("accept");
    SETINT("tcp-client", c, IPPROTO_TCP, TCP_KEEPIDLE, 77);
    SETINT("tcp-client", c, IPPROTO_TCP, TCP_KEEPINTVL, 11);
    SETINT("tcp-client", c, IPPROTO_TCP, TCP_KEEPCNT, 3);
    SETINT("tcp-client", c, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
    SETINT("tcp-client", c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4096);
    SETINT("tcp-client", c, IPPROTO_IP, IP_TOS, 0x10);
    struct timeval snd = {1, 250000};
    setopt("tcp-client", c, SOL_SOCKET, SO_SNDTIMEO, "SO_SNDTIMEO", &snd, sizeof snd, 0);
    setopt("tcp-client", c, SOL_SOCKET, SO_LINGER, "SO_LINGER", &lg, sizeof lg, 0);
    /* Whichever of the two this kernel does not use by default. */
    char cc[16] = "";
    socklen_t cclen = sizeof cc;
    getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &cclen);
    const char *other = strcmp(cc, "reno") == 0 ? "cubic" : "reno";
    setopt("tcp-client", c, IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION", other, strlen(other), 1);
    SETINT("tcp-server", srv, SOL_SOCKET, SO_OOBINLINE, 1);
    SETINT("tcp-server", srv, IPPROTO_TCP, TCP_LINGER2, 20);
    SETINT("tcp-server", srv, IPPROTO_IP, IP_TTL, 33);
    /* UDP. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (u < 0 || bind(u, (struct sockaddr *)&ua, sizeof ua) < 0) die("udp");
    SETINT("udp", u, SOL_SOCKET, SO_BROADCAST, 1);
    SETINT("udp", u, SOL_SOCKET, SO_RCVBUF, 50000);
    SETINT("udp", u, SOL_SOCKET, SO_PRIORITY, 5);
    SETINT("udp", u, IPPROTO_IP, IP_TTL, 9);
    SETINT("udp", u, IPPROTO_IP, IP_RECVERR, 1);
    SETINT("udp", u, IPPROTO_IP, IP_PKTINFO, 1);
    SETINT("udp", u, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
    int u6 = socket(AF_INET6, SOCK_DGRAM, 0);
    if (u6 >= 0) {
        SETINT("udp6", u6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 17);
        SETINT("udp6", u6, IPPROTO_IPV6, IPV6_TCLASS, 0x20);
        SETINT("udp6", u6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
    }
    /* Unix: a pair, and a bound datagram socket. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    SETINT("unix-pair", sv[0], SOL_SOCKET, SO_PASSCRED, 1);
    SETINT("unix-pair", sv[1], SOL_SOCKET, SO_SNDBUF, 100000);
    struct timeval quick = {0, 300000};
    setopt("unix-pair", sv[1], SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO", &quick, sizeof quick, 0);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un da = {.sun_family = AF_UNIX, .sun_path = "dgram.sock"};
    unlink("dgram.sock");
    if (d < 0 || bind(d, (struct sockaddr *)&da, sizeof da) < 0) die("unix dgram");
    SETINT("unix-dgram", d, SOL_SOCKET, SO_TIMESTAMP, 1);
    SETINT("unix-dgram", d, SOL_SOCKET, SO_PEEK_OFF, 0);
    wait_go();
    const char *groups[] = {"tcp-listener", "tcp-client", "tcp-server", "udp", "unix-pair", "unix-dgram"};
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) check_group(groups[i]);
    if (u6 >= 0) check_group("udp6");
    /* The receive timeout works: an empty socket gives EAGAIN after it. */
    struct timespec t0, t1;
    char byte;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ssize_t n = recv(sv[1], &byte, 1, 0);
    int err = errno;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = t1.tv_sec - t0.tv_sec + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    errno = err;
    CHECK(n < 0 && err == EAGAIN && waited > 0.2 && waited < 5, "sockopts-timeout-works", "recv %zd after %.2f s", n, waited);
    /* The connection still carries bytes both ways. */
    CHECK(write(c, "ping", 4) == 4 && recv(srv, &byte, 1, 0) == 1 && byte == 'p' && write(srv, "x", 1) == 1 && recv(c, &byte, 1, 0) == 1 && byte == 'x', "sockopts-tcp-works", "ping");
    return bad;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "files";
    int r;
    if (strcmp(mode, "files") == 0)
        r = files();
    else if (strcmp(mode, "kernel") == 0)
        r = kernel();
    else if (strcmp(mode, "netlink") == 0)
        r = netlink();
    else if (strcmp(mode, "sockopts") == 0)
        r = sockopts();
    else if (strcmp(mode, "netlink-unread") == 0) {
        /* A dump asked for and not read: its reply waits in the socket. */
        int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
        struct { struct nlmsghdr h; struct ifinfomsg i; } req = {{sizeof req, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0}, {0}};
        if (nl < 0 || send(nl, &req, sizeof req, 0) < 0) die("netlink request");
        wait_go();
        r = 0;
    }
    else {
        /* UFFD_USER_MODE_ONLY: allowed without privileges. */
        if (syscall(SYS_userfaultfd, O_CLOEXEC | 1) < 0) die("userfaultfd");
        wait_go();
        r = 0;
    }
    printf("done %s\n", r ? "with failures" : "ok");
    return r;
}
