/*
 * sched_bench.c - `make bench` part (i): what destination scheduling
 * (DESIGN §11) costs per message: the state operations of one new
 * session (a slot taken, the session noted as open, the slot given back),
 * timed one cycle at a time, in P processes at once on one state file.
 * The other side of the comparison is the same loop with scheduling off.
 *
 *   sched-bench CONF N P [same,reuse,limits]  prints one JSON line:
 *       median, p90, max (microseconds per cycle) over all P processes;
 *       "same": all on one server; "reuse": the cycle of a session taken
 *       out of LMTP mode's cache (slot again, slot back) instead of a new
 *       one; "limits": a new session as a delivery makes it, with the
 *       look at the fleet's learned limits after the greeting
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "schedule.h"
#include "target.h"

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static gboolean reuse;  /* the cycle of a reused session */
static gboolean limits; /* and the learned limits looked up */

/* now_us - CLOCK_MONOTONIC in microseconds, with its nanoseconds */
static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* cycles - N cycles on server PORT; the times (us) to FD */
static void
cycles(const AgentConf *c, guint n, guint16 port, int fd)
{
    Target *t = target_new("bench.test", "127.0.0.1", port, AF_INET);
    gint64 deadline = g_get_monotonic_time() + 600 * G_USEC_PER_SEC;
    double *us = g_new(double, n);
    g_autofree char *key = g_strdup_printf("127.0.0.1:%u", port);

    for (guint i = 0; i < n; i++) {
        double t0 = now_us();
        SchedAdmit a;

        if (reuse) { /* a session out of the LMTP cache */
            SchedLease *l = NULL;

            memset(&a, 0, sizeof a);
            (void)sched_rejoin(c, t, &l);
            sched_done(l);
        } else {     /* a new session */
            sched_admit(c, t, deadline, NULL, &a);
            sched_opened(a.lease, SCHED_OK, NULL);
            if (limits) {
                guint k = 0;
                gboolean one = FALSE;

                (void)sched_limits_get(c, key, &k, &one);
            }
            sched_done(a.lease);
        }
        us[i] = now_us() - t0;
        g_free(a.reason);
    }
    if (write(fd, us, n * sizeof *us) != (ssize_t)(n * sizeof *us))
        _exit(1);
    g_free(us);
    target_free(t);
}

int
main(int argc, char **argv)
{
    g_autoptr(AgentConf) c = NULL;
    GError *err = NULL;
    guint n, procs;
    gboolean same;
    int fds[2];
    double *all;
    gsize total, got = 0;

    if (argc < 4) {
        fprintf(stderr, "usage: sched-bench CONF N P [same,reuse,limits]\n");
        return 64;
    }
    log_init("sched-bench", FALSE);
    if ((c = agent_conf_load(argv[1], &err)) == NULL) {
        fprintf(stderr, "%s\n", err->message);
        return 78;
    }
    n = (guint)atoi(argv[2]);
    procs = (guint)atoi(argv[3]);
    same = argc > 4 && strstr(argv[4], "same") != NULL;
    reuse = argc > 4 && strstr(argv[4], "reuse") != NULL;
    limits = argc > 4 && strstr(argv[4], "limits") != NULL;
    total = (gsize)n * procs;
    all = g_new(double, total);
    if (pipe(fds) != 0)
        return 71;
    for (guint p = 0; p < procs; p++) {
        if (fork() == 0) {
            close(fds[0]);
            cycles(c, n, (guint16)(same ? 2525 : 2525 + p), fds[1]);
            _exit(0);
        }
    }
    close(fds[1]);
    while (got < total * sizeof *all) {
        ssize_t r = read(fds[0], (char *)all + got,
                         total * sizeof *all - got);

        if (r <= 0)
            break;
        got += (gsize)r;
    }
    while (wait(NULL) > 0)
        ;
    total = got / sizeof *all;
    qsort(all, total, sizeof *all, cmp_double);
    printf("{\"cycles\": %zu, \"median_us\": %.2f, \"p90_us\": %.2f, "
           "\"max_us\": %.1f}\n", total, total ? all[total / 2] : 0,
           total ? all[total * 9 / 10] : 0, total ? all[total - 1] : 0);
    g_free(all);
    return 0;
}
