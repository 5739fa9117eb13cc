/*
 * sqldb.h - what the journal and the delivery log do alike with their
 * SQLite files (DESIGN §7): statements without rows and their errors in
 * one wording, statements prepared once ("LABEL PATH: WHAT: sqlite's message"), one-number
 * queries, the schema steps by PRAGMA user_version, and the maintenance
 * claim that lets one run at a time do the expiry work. Lock waits and
 * the WAL are sqlwait.h's.
 *
 * Never: begin or end a transaction the caller did not ask for.
 */
#ifndef RR_SQLDB_H
#define RR_SQLDB_H

#include <glib.h>
#include <sqlite3.h>

#include "sqlwait.h"

typedef struct {
    sqlite3 *db;
    const char *label; /* "journal", "delivery log" */
    const char *path;
    GQuark quark;      /* of the errors */
    SqlWait *wait;     /* its gate and busy handler; may be NULL */
} SqlDb;

/* sqldb_error - ERROR from the connection's last failure: "LABEL PATH:
 * WHAT: message", code the extended SQLite result */
void sqldb_error(const SqlDb *s, GError **error, const char *what);

/* sqldb_exec - SQL without rows; FALSE + error naming WHAT */
gboolean sqldb_exec(const SqlDb *s, const char *sql, const char *what,
                    GError **error);

/* sqldb_begin - BEGIN IMMEDIATE, through the writers' gate (sqlwait.h);
 * FALSE + error */
gboolean sqldb_begin(const SqlDb *s, GError **error);

/* sqldb_commit - COMMIT and out of the gate; FALSE + error (the caller
 * then rolls back) */
gboolean sqldb_commit(const SqlDb *s, GError **error);

/* sqldb_rollback - ROLLBACK (when a transaction is open) and out of the
 * gate */
void sqldb_rollback(const SqlDb *s);

/* sqldb_stmts_new - a cache of prepared statements, SQL text -> its
 * statement (sqldb_stmt); destroying it finalizes them, so it goes before
 * the connection closes */
GHashTable *sqldb_stmts_new(void);

/* sqldb_stmt - SQL prepared once on DB and kept in STMTS (SQLite prepares
 * it again itself after a schema change): a resident agent's messages
 * would otherwise parse the same few statements again and again; NULL
 * when it cannot be prepared (the connection holds the error). Give it
 * back with sqldb_stmt_done. Under the caller's lock of DB. */
sqlite3_stmt *sqldb_stmt(GHashTable *stmts, sqlite3 *db, const char *sql);

/* sqldb_stmt_done - ST (may be NULL) reset, its bindings cleared: no
 * read left open on the file */
void sqldb_stmt_done(sqlite3_stmt *st);

/* sqldb_int - the first column of a one-row query, or -1 */
gint64 sqldb_int(const SqlDb *s, const char *sql);

/* sqldb_migrate - inside the caller's write transaction: the schema from
 * its version up to N steps (STEPS[i] brings version i to i + 1), and
 * PRAGMA user_version = N written (with ALWAYS_WRITE also when nothing
 * changed: the journal's proof that the file can be written). A version
 * above N is refused: error code NEWER_CODE, the message ending in
 * NEWER_HINT (may be ""). FALSE + error. */
gboolean sqldb_migrate(const SqlDb *s, const char *const *steps, int n,
                       gboolean always_write, int newer_code,
                       const char *newer_hint, GError **error);

/* sqldb_maint_claim - inside the caller's write transaction: 1 when this
 * run does the maintenance NAME (its stamp in the "maintenance" table,
 * made when missing, is INTERVAL seconds old or more; the stamp moves to
 * NOW, so no other run does it before the next interval), 0 when it is
 * not due, -1 + error */
int sqldb_maint_claim(const SqlDb *s, const char *name, gint64 now,
                      gint64 interval, GError **error);

/* sqldb_maint_again - the maintenance NAME was cut short (a chunk was
 * full): its stamp back to 0, so the next run goes on; FALSE + error */
gboolean sqldb_maint_again(const SqlDb *s, const char *name,
                           GError **error);

#endif
