/*
 * sqlwait.h - how the agent's SQLite files are shared by the up to
 * maxproc agents that Postfix runs at once (DESIGN §7): writers queue at
 * a gate beside the file (a process-shared mutex the kernel hands over
 * the moment it is free), waiting for SQLite's own lock in short,
 * jittered steps is the fallback, and a WAL kept short by whoever
 * commits.
 */
#ifndef RR_SQLWAIT_H
#define RR_SQLWAIT_H

#include <glib.h>
#include <sqlite3.h>

typedef struct SqlGateMap SqlGateMap;

typedef struct {
    guint timeout_ms;   /* give up on a lock after this long */
    int wal_pages;      /* checkpoint once the WAL holds this many pages */
    gint64 since;       /* start of the current wait (monotonic, us) */
    gint64 began;       /* 0, or when the write began at the gate: the
                         * busy handler's wait counts from there */
    SqlGateMap *gate;   /* NULL: no gate, SQLite's lock alone */
    gboolean held;
    gboolean keep_wal;  /* sqlwait_keep_wal */
    /* BEGIN IMMEDIATE, COMMIT, ROLLBACK prepared once (sqldb.c) */
    sqlite3_stmt *tx[3];
} SqlWait;

/* sqlwait_install - W (which must outlive DB) becomes DB's busy handler
 * and WAL hook, with the gate "<DB's file>-gate" when it can be had (a
 * file that cannot be made or mapped only costs the gate) */
void sqlwait_install(sqlite3 *db, SqlWait *w, guint timeout_ms,
                     int wal_pages);

/* sqlwait_keep_wal - a resident process's DB: its checkpoints start the
 * WAL over in place instead of truncating it (sqlwait.c), and a WAL
 * that grew past SQLWAIT_WAL_LIMIT is cut back to it; FALSE + *RC */
gboolean sqlwait_keep_wal(sqlite3 *db, SqlWait *w, int *rc);

/* sqlwait_enter - before a write transaction: wait at the gate, at most
 * the timeout (then, or without a gate, SQLite's lock decides alone) */
void sqlwait_enter(SqlWait *w);

/* sqlwait_leave - after its COMMIT or ROLLBACK (again: nothing) */
void sqlwait_leave(SqlWait *w);

/* sqlwait_uninstall - the gate unmapped, the statements finalized;
 * before DB is closed */
void sqlwait_uninstall(SqlWait *w);

/* sqlwait_wal_mode - "PRAGMA journal_mode = WAL", waiting as the busy
 * handler would: on a file that several runs create at once, SQLite can
 * answer SQLITE_BUSY to the switch without calling the handler. The
 * SQLite result code. */
int sqlwait_wal_mode(sqlite3 *db, const SqlWait *w);

#endif
