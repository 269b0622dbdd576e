/*
 * berth's pause program: the infra process of every pod. It holds the pod's
 * namespaces and does nothing else: it sleeps until SIGTERM or SIGINT, and, as PID 1
 * of a pod that shares its PID namespace, reaps the zombies its children leave.
 *
 * Signals are blocked and taken with sigwaitinfo rather than handled: a blocked signal
 * is queued even for a PID 1, which the kernel otherwise shields from signals it has
 * no handler for.
 *
 * Built statically by build.rs, so the pause rootfs holds this one file and nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap(void) {
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0)
            continue;
        if (pid < 0 && errno == EINTR)
            continue;
        return;
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("berth-pause 1");
        return 0;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        perror("pause: sigprocmask");
        return 1;
    }
    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig == SIGCHLD) {
            reap();
        } else if (sig == SIGTERM || sig == SIGINT) {
            return 0;
        } else if (sig < 0 && errno != EINTR) {
            perror("pause: sigwaitinfo");
            return 1;
        }
    }
}
