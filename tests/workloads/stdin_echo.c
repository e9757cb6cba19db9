/* stdin_echo: block in read(0, ...) and log every line read as "echo: LINE".
 *
 * usage: stdin_echo
 * Log (stdout): "ready pid P", then "echo: LINE" per line, "eof" at end of
 * input, after which it exits 0. A read error logs "read error ERRNO" and
 * exits 5; EINTR (there are no signal handlers) logs "EINTR" and exits 4.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void out(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(2);
        }
        p += w;
        n -= (size_t)w;
    }
}

static void logline(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    out(buf, (size_t)n);
}

int main(void)
{
    char line[4096];
    size_t len = 0;
    logline("ready pid %d\n", (int)getpid());
    for (;;) {
        char buf[1024];
        ssize_t r = read(0, buf, sizeof buf);
        if (r < 0) {
            if (errno == EINTR) {
                logline("EINTR in read\n");
                return 4;
            }
            logline("read error %d\n", errno);
            return 5;
        }
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] == '\n' || len == sizeof line - 1) {
                out("echo: ", 6);
                out(line, len);
                out("\n", 1);
                len = 0;
            } else {
                line[len++] = buf[i];
            }
        }
    }
    if (len > 0) {
        out("echo: ", 6);
        out(line, len);
        out("\n", 1);
    }
    logline("eof\n");
    return 0;
}
