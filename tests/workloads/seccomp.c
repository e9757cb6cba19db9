/* Installs an allow-everything seccomp filter, then counts: a target cryo must
 * refuse (it cannot read the filter) without disturbing it.
 * Usage: seccomp  -- prints "filtered" then "tick N" every 100 ms. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 1;
    }
    printf("filtered\n");
    fflush(stdout);
    for (long i = 1;; i++) {
        printf("tick %ld\n", i);
        fflush(stdout);
        usleep(100000);
    }
}
