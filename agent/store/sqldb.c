/*
 * sqldb.c - the journal's and the delivery log's shared SQLite plumbing
 * (see sqldb.h, DESIGN §7).
 */
#include "sqldb.h"

void
sqldb_error(const SqlDb *s, GError **error, const char *what)
{
    g_set_error(error, s->quark, sqlite3_extended_errcode(s->db),
                "%s %s: %s: %s", s->label, s->path, what,
                sqlite3_errmsg(s->db));
}

gboolean
sqldb_exec(const SqlDb *s, const char *sql, const char *what,
           GError **error)
{
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return TRUE;
    sqldb_error(s, error, what);
    return FALSE;
}

static void
stmt_free(gpointer st)
{
    sqlite3_finalize(st);
}

GHashTable *
sqldb_stmts_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, stmt_free);
}

sqlite3_stmt *
sqldb_stmt(GHashTable *stmts, sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = g_hash_table_lookup(stmts, sql);

    if (st != NULL)
        return st;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    g_hash_table_insert(stmts, g_strdup(sql), st);
    return st;
}

void
sqldb_stmt_done(sqlite3_stmt *st)
{
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* The transaction statements, prepared once per connection when it has
 * a SqlWait (each message's two or three commits parsed them again). */
enum { SQLDB_BEGIN, SQLDB_COMMIT, SQLDB_ROLLBACK };
static const char *const sqldb_tx_sql[] = {"BEGIN IMMEDIATE", "COMMIT",
                                           "ROLLBACK"};

/* sqldb_tx - run transaction statement K; FALSE + error naming WHAT */
static gboolean
sqldb_tx(const SqlDb *s, int k, const char *what, GError **error)
{
    sqlite3_stmt **st = s->wait != NULL ? &s->wait->tx[k] : NULL;
    int rc;

    if (st == NULL || (*st == NULL &&
                       sqlite3_prepare_v3(s->db, sqldb_tx_sql[k], -1,
                                          SQLITE_PREPARE_PERSISTENT, st,
                                          NULL) != SQLITE_OK))
        return sqldb_exec(s, sqldb_tx_sql[k], what, error);
    rc = sqlite3_step(*st);
    if (rc != SQLITE_DONE)
        sqldb_error(s, error, what); /* before the reset: its message */
    sqlite3_reset(*st);
    return rc == SQLITE_DONE;
}

gboolean
sqldb_begin(const SqlDb *s, GError **error)
{
    if (s->wait != NULL)
        sqlwait_enter(s->wait);
    if (sqldb_tx(s, SQLDB_BEGIN, "cannot begin", error))
        return TRUE;
    if (s->wait != NULL)
        sqlwait_leave(s->wait);
    return FALSE;
}

gboolean
sqldb_commit(const SqlDb *s, GError **error)
{
    gboolean ok = sqldb_tx(s, SQLDB_COMMIT, "cannot commit", error);

    /* a failed COMMIT may leave the transaction open: the gate is left
     * at the caller's ROLLBACK then */
    if ((ok || sqlite3_get_autocommit(s->db)) && s->wait != NULL)
        sqlwait_leave(s->wait);
    return ok;
}

void
sqldb_rollback(const SqlDb *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqldb_tx(s, SQLDB_ROLLBACK, "cannot roll back", NULL);
    if (s->wait != NULL)
        sqlwait_leave(s->wait);
}

gint64
sqldb_int(const SqlDb *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    gint64 v = -1;

    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

gboolean
sqldb_migrate(const SqlDb *s, const char *const *steps, int n,
              gboolean always_write, int newer_code, const char *newer_hint,
              GError **error)
{
    g_autofree char *sql = NULL;
    gint64 v = sqldb_int(s, "PRAGMA user_version");

    if (v < 0) {
        sqldb_error(s, error, "cannot read schema version");
        return FALSE;
    }
    if (v > n) {
        g_set_error(error, s->quark, newer_code, "%s %s: schema version %"
                    G_GINT64_FORMAT " is newer than this program knows "
                    "(%d)%s", s->label, s->path, v, n, newer_hint);
        return FALSE;
    }
    if (v == n && !always_write)
        return TRUE;
    for (gint64 i = v; i < n; i++)
        if (!sqldb_exec(s, steps[i], "cannot create schema", error))
            return FALSE;
    sql = g_strdup_printf("PRAGMA user_version = %d", n);
    return sqldb_exec(s, sql, "cannot write", error);
}

int
sqldb_maint_claim(const SqlDb *s, const char *name, gint64 now,
                  gint64 interval, GError **error)
{
    sqlite3_stmt *st = NULL;
    gboolean ok;

    /* the table from the schema already read: no SQL compiled for it */
    if (sqlite3_table_column_metadata(s->db, NULL, "maintenance", NULL,
                                      NULL, NULL, NULL, NULL, NULL)
            != SQLITE_OK &&
        !sqldb_exec(s, "CREATE TABLE IF NOT EXISTS maintenance ("
                    " name TEXT PRIMARY KEY, time INTEGER NOT NULL);",
                    "cannot create schema", error))
        return -1;
    if (sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO maintenance"
                           " VALUES (?1, 0)", -1, &st, NULL) != SQLITE_OK) {
        sqldb_error(s, error, "cannot read the maintenance stamp");
        return -1;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    st = NULL;
    if (!ok || sqlite3_prepare_v2(s->db, "UPDATE maintenance SET time = ?1"
                                  " WHERE name = ?3 AND time <= ?1 - ?2",
                                  -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        sqldb_error(s, error, "cannot read the maintenance stamp");
        return -1;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, interval);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (!ok) {
        sqldb_error(s, error, "cannot write the maintenance stamp");
        return -1;
    }
    return sqlite3_changes(s->db) == 1 ? 1 : 0;
}

gboolean
sqldb_maint_again(const SqlDb *s, const char *name, GError **error)
{
    sqlite3_stmt *st = NULL;
    gboolean ok;

    if (sqlite3_prepare_v2(s->db, "UPDATE maintenance SET time = 0"
                           " WHERE name = ?", -1, &st, NULL) != SQLITE_OK) {
        sqldb_error(s, error, "cannot write the maintenance stamp");
        return FALSE;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    if (!ok)
        sqldb_error(s, error, "cannot write the maintenance stamp");
    return ok;
}
