/*
 * t/unit/sqlwait.c - how agents take turns (DESIGN §7, §11): the writers'
 * gate beside a SQLite file (opened while another process holds it
 * open, handed over, given back by a holder that died, given up after
 * the timeout) and the host's destination state waking a waiter when a
 * slot frees. Each check forks the second process; a check that would
 * hang is bounded by a wait far above what it needs.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "schedule-int.h"
#include "sqlwait.h"

typedef struct {
    sqlite3 *db;
    SqlWait w;
} Db;

static void
db_open(Db *d, const char *path, guint timeout_ms)
{
    g_assert_cmpint(sqlite3_open(path, &d->db), ==, SQLITE_OK);
    sqlwait_install(d->db, &d->w, timeout_ms, 1000);
}

static void
db_close(Db *d)
{
    sqlwait_uninstall(&d->w);
    sqlite3_close(d->db);
}

/* child_wait - the exit status of child PID, killing it past LIMIT_S
 * seconds (then -1) */
static int
child_wait(pid_t pid, double limit_s)
{
    gint64 end = g_get_monotonic_time() + (gint64)(limit_s * 1e6);
    int st;

    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (g_get_monotonic_time() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        g_usleep(10000);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *
db_path(char **dir)
{
    *dir = g_dir_make_tmp("sqlwait-test-XXXXXX", NULL);
    g_assert_nonnull(*dir);
    return g_build_filename(*dir, "test.db", NULL);
}

static void
tmp_remove(char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *p = g_build_filename(dir, name, NULL);

        g_unlink(p);
    }
    if (d != NULL)
        g_dir_close(d);
    g_rmdir(dir);
    g_free(dir);
}

/* a second process opens the file while the first keeps it open: the
 * gate's set-up lock must not stay with the first one's mapping */
static void
test_open_while_open(void)
{
    char *dir;
    g_autofree char *path = db_path(&dir);
    Db a;
    pid_t pid;

    db_open(&a, path, 5000);
    g_assert_nonnull(a.w.gate);
    if ((pid = fork()) == 0) {
        Db b;

        db_open(&b, path, 5000);
        _exit(b.w.gate != NULL ? 0 : 1);
    }
    g_assert_cmpint(child_wait(pid, 20), ==, 0);
    db_close(&a);
    tmp_remove(dir);
}

/* the gate is handed to the process waiting for it */
static void
test_handover(void)
{
    char *dir;
    g_autofree char *path = db_path(&dir);
    Db a;
    pid_t pid;
    int ready[2];
    char c;

    db_open(&a, path, 30000);
    sqlwait_enter(&a.w);
    g_assert_true(a.w.held);
    g_assert_cmpint(pipe(ready), ==, 0);
    if ((pid = fork()) == 0) {
        Db b;

        db_open(&b, path, 30000);
        if (write(ready[1], "x", 1) != 1)
            _exit(5);
        sqlwait_enter(&b.w); /* waits for the parent's leave */
        _exit(b.w.held ? 0 : 1);
    }
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    g_usleep(100000);
    /* still waiting: the parent holds it */
    g_assert_cmpint(waitpid(pid, NULL, WNOHANG), ==, 0);
    sqlwait_leave(&a.w);
    g_assert_false(a.w.held);
    g_assert_cmpint(child_wait(pid, 20), ==, 0);
    close(ready[0]);
    close(ready[1]);
    db_close(&a);
    tmp_remove(dir);
}

/* a holder that dies in the gate gives it back (robust mutex) */
static void
test_holder_died(void)
{
    char *dir;
    g_autofree char *path = db_path(&dir);
    Db a;
    pid_t pid;
    gint64 t0;

    db_open(&a, path, 20000);
    if ((pid = fork()) == 0) {
        Db b;

        db_open(&b, path, 20000);
        sqlwait_enter(&b.w);
        _exit(b.w.held ? 0 : 1); /* dies holding it */
    }
    g_assert_cmpint(child_wait(pid, 20), ==, 0);
    t0 = g_get_monotonic_time();
    sqlwait_enter(&a.w);
    g_assert_true(a.w.held);
    /* far below the 20 s timeout: it was not waited out */
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 10 * G_USEC_PER_SEC);
    sqlwait_leave(&a.w);
    db_close(&a);
    tmp_remove(dir);
}

/* a holder that stays (stopped, stuck) is waited for at most the
 * timeout; SQLite's own lock then decides */
static void
test_timeout(void)
{
    char *dir;
    g_autofree char *path = db_path(&dir);
    Db a;
    pid_t pid;
    int ready[2];
    char c;

    db_open(&a, path, 200);
    g_assert_cmpint(pipe(ready), ==, 0);
    if ((pid = fork()) == 0) {
        Db b;

        db_open(&b, path, 200);
        sqlwait_enter(&b.w);
        if (write(ready[1], b.w.held ? "y" : "n", 1) != 1)
            _exit(5);
        pause();
        _exit(0);
    }
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    g_assert_cmpint(c, ==, 'y');
    sqlwait_enter(&a.w);
    g_assert_false(a.w.held);
    g_assert_cmpint(sqlite3_exec(a.db, "BEGIN IMMEDIATE; CREATE TABLE t(x);"
                                 " COMMIT", NULL, NULL, NULL), ==, SQLITE_OK);
    sqlwait_leave(&a.w);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(ready[0]);
    close(ready[1]);
    db_close(&a);
    tmp_remove(dir);
}

/* a process that finds every slot of a server taken is woken when one
 * frees, not at the end of its sleep */
static void
test_slot_wake(void)
{
    char *dir = g_dir_make_tmp("sched-test-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "destinations.state",
                                             NULL);
    SchedParams p = {.cap = 1, .initial = 1, .lease_ttl = 600};
    StoreAdmit a;
    GError *err = NULL;
    gpointer st = sched_local_ops.open(path, &err);
    int ready[2];
    pid_t pid;
    char c;

    g_assert_no_error(err);
    g_assert_true(sched_local_ops.acquire(st, "127.0.0.1:25", "mx.test", &p,
                                          (double)g_get_real_time() / 1e6,
                                          &a, &err));
    g_assert_cmpint(a.verdict, ==, STORE_GO);
    g_assert_cmpint(pipe(ready), ==, 0);
    if ((pid = fork()) == 0) {
        gpointer cst = sched_local_ops.open(path, NULL);
        StoreAdmit b;
        gint64 t0;

        if (cst == NULL ||
            !sched_local_ops.acquire(cst, "127.0.0.1:25", "mx.test", &p,
                                     (double)g_get_real_time() / 1e6, &b,
                                     NULL) || b.verdict != STORE_BUSY)
            _exit(2);
        if (write(ready[1], "x", 1) != 1)
            _exit(5);
        t0 = g_get_monotonic_time();
        sched_local_ops.wait(cst, b.wake, 30000);
        if (g_get_monotonic_time() - t0 > 15 * G_USEC_PER_SEC)
            _exit(3); /* slept it out: nobody woke it */
        if (!sched_local_ops.acquire(cst, "127.0.0.1:25", "mx.test", &p,
                                     (double)g_get_real_time() / 1e6, &b,
                                     NULL) || b.verdict != STORE_GO)
            _exit(4);
        _exit(0);
    }
    g_assert_cmpint(read(ready[0], &c, 1), ==, 1);
    g_usleep(200000);
    g_assert_true(sched_local_ops.release(st, "127.0.0.1:25", a.lease,
                                          &err));
    g_assert_cmpint(child_wait(pid, 40), ==, 0);
    close(ready[0]);
    close(ready[1]);
    sched_local_ops.close(st);
    tmp_remove(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sqlwait/gate/open-while-open", test_open_while_open);
    g_test_add_func("/sqlwait/gate/handover", test_handover);
    g_test_add_func("/sqlwait/gate/holder-died", test_holder_died);
    g_test_add_func("/sqlwait/gate/timeout", test_timeout);
    g_test_add_func("/sched/local/slot-wake", test_slot_wake);
    return g_test_run();
}
