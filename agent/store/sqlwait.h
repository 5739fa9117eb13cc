/*
 * sqlwait.h - how the agent's SQLite files are shared by the up to
 * maxproc agents that Postfix runs at once (DESIGN §7): waiting for a lock
 * in short, jittered steps, and a WAL kept short by whoever commits.
 */
#ifndef RR_SQLWAIT_H
#define RR_SQLWAIT_H

#include <glib.h>
#include <sqlite3.h>

typedef struct {
    guint timeout_ms;   /* give up on a lock after this long */
    int wal_pages;      /* checkpoint once the WAL holds this many pages */
    gint64 since;       /* start of the current wait (monotonic, us) */
} SqlWait;

/* sqlwait_install - W (which must outlive DB) becomes DB's busy handler
 * and WAL hook */
void sqlwait_install(sqlite3 *db, SqlWait *w, guint timeout_ms,
                     int wal_pages);

/* sqlwait_wal_mode - "PRAGMA journal_mode = WAL", waiting as the busy
 * handler would: on a file that several runs create at once, SQLite can
 * answer SQLITE_BUSY to the switch without calling the handler. The
 * SQLite result code. */
int sqlwait_wal_mode(sqlite3 *db, const SqlWait *w);

#endif
