/* A pseudo-terminal inside the tree: the parent holds the master, a child
 * in its own session has the slave as controlling terminal and stdio, in
 * a mode without echo, with a window size set by the parent. The parent
 * sends lines and logs the replies. After "go" (a file in the cwd) the
 * child reports what it sees of its terminal, and the exchange goes on. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "selfcheck.h"


/* Read from the master up to a newline. */
static int read_line(int fd, char *buf, size_t len) {
    size_t n = 0;
    while (n + 1 < len) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0) return -1;
        if (c == '\r') continue;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return n;
}

static void child(const char *slave) {
    setsid();
    int s = open(slave, O_RDWR); /* becomes the controlling terminal */
    if (s < 0) die("open slave");
    dup2(s, 0);
    dup2(s, 1);
    dup2(s, 2);
    if (s > 2) close(s);
    struct termios t;
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, "report") == 0) {
            struct winsize ws;
            ioctl(0, TIOCGWINSZ, &ws);
            tcgetattr(0, &t);
            int fg = tcgetpgrp(0) == getpgrp();
            int ctty = open("/dev/tty", O_RDWR) >= 0;
            printf("child sees rows %d cols %d echo %s foreground %d ctty %d\n", ws.ws_row, ws.ws_col, (t.c_lflag & ECHO) ? "on" : "off", fg, ctty);
        } else {
            printf("reply %s\n", line);
        }
        fflush(stdout);
    }
    exit(0);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0) die("openpt");
    char *slave = strdup(ptsname(m));
    struct winsize ws = {.ws_row = 33, .ws_col = 99};
    ioctl(m, TIOCSWINSZ, &ws);
    struct termios t;
    tcgetattr(m, &t);
    t.c_lflag &= ~ECHO;
    tcsetattr(m, TCSANOW, &t);
    pid_t c = fork();
    if (c == 0) child(slave);
    char buf[256];
    for (int i = 1; i <= 3; i++) {
        dprintf(m, "line %d\n", i);
        if (read_line(m, buf, sizeof buf) < 0) die("read");
        printf("%s\n", buf);
    }
    printf("ready\n");
    wait_for_go();
    dprintf(m, "report\n");
    read_line(m, buf, sizeof buf);
    printf("%s\n", buf);
    for (int i = 4; i <= 6; i++) {
        dprintf(m, "line %d\n", i);
        if (read_line(m, buf, sizeof buf) < 0) die("read");
        printf("%s\n", buf);
    }
    close(m);
    int st;
    waitpid(c, &st, 0);
    printf("done\n");
    return 0;
}
