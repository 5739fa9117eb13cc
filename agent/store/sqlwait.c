/*
 * sqlwait.c - lock waits and the WAL policy of the journal and the
 * delivery log (see sqlwait.h, DESIGN §7).
 */
#include "sqlwait.h"

#define SQLWAIT_STEP_US 100   /* first sleep; doubles up to the cap */
#define SQLWAIT_CAP_US 2000

/*
 * sqlwait_busy - SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20,
 * 25 ... ms: with 20 agents committing in turn, a waiter slept through
 * several commits and the agents spent most of their time asleep. Here
 * the steps are 0.1 to 2 ms plus a random part, so that waiters neither
 * oversleep nor wake in lockstep.
 */
static int
sqlwait_busy(void *data, int count)
{
    SqlWait *w = data;
    gint64 now = g_get_monotonic_time();
    guint step;

    if (count == 0)
        w->since = now;
    if (now - w->since >= (gint64)w->timeout_ms * 1000)
        return 0;
    step = MIN(SQLWAIT_STEP_US << MIN(count, 5), SQLWAIT_CAP_US);
    g_usleep(step + g_random_int_range(0, (gint32)step));
    return 1;
}

/*
 * sqlwait_wal - after each commit. A run that finds no other run open
 * replays the whole WAL into a fresh index (SQLite empties the -shm file
 * then), and only a run whose index is intact ever starts the WAL over:
 * left to SQLite's automatic passive checkpoints, the WAL of agents that
 * run one after another grows without end and every run reads all of it.
 * So once it holds W->wal_pages pages, the committing run checkpoints and
 * truncates it, without waiting: when another run is reading or writing,
 * the checkpoint copies what it can and a later commit tries again (the
 * index is shared then, and the WAL restarts the usual way).
 */
static int
sqlwait_wal(void *data, sqlite3 *db, const char *name, int pages)
{
    SqlWait *w = data;

    if (pages < w->wal_pages)
        return SQLITE_OK;
    sqlite3_busy_handler(db, NULL, NULL);
    sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_TRUNCATE, NULL,
                              NULL);
    sqlite3_busy_handler(db, sqlwait_busy, w);
    return SQLITE_OK; /* a busy checkpoint is no failure of the commit */
}

void
sqlwait_install(sqlite3 *db, SqlWait *w, guint timeout_ms, int wal_pages)
{
    w->timeout_ms = timeout_ms;
    w->wal_pages = wal_pages;
    w->since = 0;
    sqlite3_busy_handler(db, sqlwait_busy, w);
    sqlite3_wal_hook(db, sqlwait_wal, w);
    /* the last connection to close would checkpoint, sync the database
     * and delete the WAL and -shm files, which the next run creates again
     * (and syncs their directory): every run when runs do not overlap.
     * The WAL stays short without it (sqlwait_wal). */
    sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
}

int
sqlwait_wal_mode(sqlite3 *db, const SqlWait *w)
{
    gint64 end = g_get_monotonic_time() + (gint64)w->timeout_ms * 1000;
    guint step = SQLWAIT_STEP_US;
    int rc;

    for (;;) {
        rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            return rc;
        if (g_get_monotonic_time() >= end)
            return rc;
        g_usleep(step + g_random_int_range(0, (gint32)step));
        step = MIN(step * 2, SQLWAIT_CAP_US);
    }
}
